//! Row-level invalidation as generation scopes. Every table has three kinds of counter, all
//! named strings so that the local generations, Redis and the pub/sub channel carry them
//! unchanged:
//! - `t`: bumped by every committed write to t; what a read that is not keyed depends on;
//! - `t\x1fw` ("wide"): bumped by writes whose keys are not known (and DDL, TRUNCATE, cascades);
//! - `t\x1fk<slot>`: bumped by a write whose primary-key values are known, one per value's slot.
//!
//! A read keyed on its primary key depends on `t\x1fw` and its key's slot only, so a write to
//! another key leaves it valid. Keys hash into `SLOTS` slots per table: two keys sharing a slot
//! only cost a miss. Keys are compared in a canonical form decided by the column's type, so the
//! same row named by a binary parameter, a text parameter or the replication stream's text
//! lands in the same slot.

use std::sync::Arc;

use crate::sql::keyed::Cast;

pub const SEP: char = '\x1f';
/// Slots per table: bounds the counters a table can have (locally and in Redis).
const SLOTS: u64 = 1024;
/// Keyed writes one transaction may carry before they count as table-level.
pub const MAX_KEYS: usize = 64;

/// The key types whose equality pgpilot can decide from bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Int,
    Uuid,
    Text,
}

impl Family {
    /// By type OID: int2, int4, int8; uuid; text, varchar.
    pub fn of(oid: u32) -> Option<Family> {
        match oid {
            20 | 21 | 23 => Some(Family::Int),
            2950 => Some(Family::Uuid),
            25 | 1043 => Some(Family::Text),
            _ => None,
        }
    }

    fn of_cast(cast: Cast) -> Option<Family> {
        match cast {
            Cast::None => None,
            Cast::Int => Some(Family::Int),
            Cast::Uuid => Some(Family::Uuid),
            Cast::Text => Some(Family::Text),
        }
    }
}

/// What a write does to its keys (`Op` of the statement), for the checks `relations` makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKind {
    Update,
    Delete,
    Insert,
}

fn slot(canonical: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(canonical) % SLOTS
}

/// `table SEP tag [n]`, built on the stack and allocated once (a transaction's writes and every
/// keyed read name a few of these; `format!` and a String's copy into the Arc cost several
/// times more).
fn scope_name(table: &str, tag: char, n: Option<u64>) -> Arc<str> {
    let mut buf = [0u8; 96];
    // (Room for the separator, the tag and u64::MAX's 20 digits after the table.)
    if table.len() > buf.len() - 22 {
        return long_scope_name(table, tag, n);
    }
    buf[..table.len()].copy_from_slice(table.as_bytes());
    let mut len = table.len();
    for b in [SEP as u8, tag as u8] {
        buf[len] = b;
        len += 1;
    }
    if let Some(n) = n {
        let mut room = [0u8; 20];
        let digits = digits(n, &mut room);
        buf[len..len + digits.len()].copy_from_slice(digits);
        len += digits.len();
    }
    // (A str followed by ASCII: always valid.)
    std::str::from_utf8(&buf[..len]).map_or_else(|_| long_scope_name(table, tag, n), Arc::from)
}

/// `scope_name` for a table name too long for its buffer.
fn long_scope_name(table: &str, tag: char, n: Option<u64>) -> Arc<str> {
    let digits = n.map(|n| n.to_string()).unwrap_or_default();
    Arc::from(format!("{table}{SEP}{tag}{digits}"))
}

/// The scope of a key's slot (what a `Written` key becomes at commit), as `read_scopes` names it.
pub fn key_scope(table: &str, slot: u64) -> Arc<str> {
    scope_name(table, 'k', Some(slot))
}

/// The scopes a read keyed on `canonical` depends on.
pub fn read_scopes(table: &str, canonical: &[u8]) -> [Arc<str>; 2] {
    [wide(table), scope_name(table, 'k', Some(slot(canonical)))]
}

pub fn wide(table: &str) -> Arc<str> {
    scope_name(table, 'w', None)
}

/// A write a commit made, as a session or the replication stream notes it: a whole table, or
/// one known key of it (what the statement did to the key, and the key's slot). Kept typed until
/// the commit turns it into generation scopes (`ResultCache::invalidate`): comparing and
/// merging a transaction's writes is then a pointer or length check, not a scan of a name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    pub table: Arc<str>,
    pub key: Option<(WriteKind, u16)>,
}

impl Written {
    pub fn table(table: Arc<str>) -> Written {
        Written { table, key: None }
    }

    /// A write of the key whose canonical form is `canonical`.
    pub fn key(table: &Arc<str>, kind: WriteKind, canonical: &[u8]) -> Written {
        // (SLOTS fits in a u16.)
        Written { table: table.clone(), key: Some((kind, slot(canonical) as u16)) }
    }

    fn same_table(&self, other: &Written) -> bool {
        Arc::ptr_eq(&self.table, &other.table) || self.table == other.table
    }

    /// A commit of `self` invalidates all that one of `w` would: the same table, whole or the same key.
    pub fn covers(&self, w: &Written) -> bool {
        self.same_table(w) && (self.key.is_none() || self.key == w.key)
    }
}

/// The table a generation scope is about (the name up to SEP, one ASCII byte: a plain loop
/// beats memchr's set-up on names this short).
pub fn table_of(name: &str) -> &str {
    name.bytes().position(|c| c == SEP as u8).map_or(name, |at| &name[..at])
}

/// A statement's or transaction's writes: most write a table or two, kept inline (a list is
/// built, moved and merged at every statement that writes; a heap one cost an allocation each).
pub type WriteList = smallvec::SmallVec<[Written; 4]>;

/// Adds `w` to a transaction's list (no duplicates; a table-level write covers every key of
/// its table); past `MAX_KEYS` keyed writes, each becomes its table (bounded memory and Redis
/// calls for a transaction writing many rows).
pub fn add(list: &mut WriteList, w: Written) {
    if list.iter().any(|n| n.covers(&w)) {
        return;
    }
    list.push(w);
    if list.len() > MAX_KEYS && list.iter().filter(|n| n.key.is_some()).count() > MAX_KEYS {
        let mut tables = WriteList::new();
        for n in list.drain(..) {
            if !tables.iter().any(|t| t.same_table(&n)) {
                tables.push(Written::table(n.table));
            }
        }
        *list = tables;
    }
}

/// A key given as a bound parameter, in canonical form. `declared`: the type the client gave
/// the parameter in its Parse (0: none); `cast`: a cast in the statement; `format`: 0 text, 1
/// binary. None whenever the bytes could mean another value to the server.
pub fn canonical_param(column: Family, declared: u32, cast: Cast, format: i16, value: &[u8]) -> Option<Vec<u8>> {
    let as_type = match (Family::of_cast(cast), declared) {
        (Some(f), _) => f,
        (None, 0) => column, // the server infers the column's type for `column = $n`
        (None, oid) => Family::of(oid)?,
    };
    if as_type != column {
        return None;
    }
    match (column, format) {
        (_, 0) => canonical_text(column, std::str::from_utf8(value).ok()?),
        (Family::Int, 1) => {
            let n = match value.len() {
                2 => i16::from_be_bytes(value.try_into().ok()?) as i64,
                4 => i32::from_be_bytes(value.try_into().ok()?) as i64,
                8 => i64::from_be_bytes(value.try_into().ok()?),
                _ => return None,
            };
            Some(decimal(n))
        }
        (Family::Uuid, 1) if value.len() == 16 => {
            Some(value.iter().map(|b| format!("{b:02x}")).collect::<String>().into())
        }
        (Family::Text, 1) => canonical_text(column, std::str::from_utf8(value).ok()?),
        _ => None,
    }
}

/// `n` in decimal, as `to_string` writes it, without the formatting machinery (every keyed
/// statement's key passes here).
fn decimal(n: i64) -> Vec<u8> {
    let mut room = [0u8; 20];
    let digits = digits(n.unsigned_abs(), &mut room);
    let mut out = Vec::with_capacity(digits.len() + 1);
    if n < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(digits);
    out
}

/// `n`'s decimal digits, written at the end of `room` (u64::MAX has 20).
fn digits(mut n: u64, room: &mut [u8; 20]) -> &[u8] {
    let mut at = room.len();
    loop {
        at -= 1;
        room[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &room[at..];
        }
    }
}

/// A key in its text form (a text parameter, or the replication stream's value unquoted).
/// Only plain forms are accepted: anything PostgreSQL might read differently (spaces, a `+`,
/// non-ASCII text whose bytes depend on the client encoding) is None.
pub fn canonical_text(column: Family, text: &str) -> Option<Vec<u8>> {
    match column {
        Family::Int => {
            let digits = text.strip_prefix('-').unwrap_or(text);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            Some(decimal(text.parse::<i64>().ok()?))
        }
        Family::Uuid => {
            let hex: String = text.chars().filter(|&c| c != '-').collect();
            let b = text.as_bytes();
            let dashes_ok = b.len() == 32 || (b.len() == 36 && [8, 13, 18, 23].iter().all(|&i| b[i] == b'-'));
            (hex.len() == 32 && dashes_ok && hex.bytes().all(|b| b.is_ascii_hexdigit()))
                .then(|| hex.to_ascii_lowercase().into_bytes())
        }
        Family::Text => text.is_ascii().then(|| text.as_bytes().to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_names_are_the_formatted_ones() {
        assert_eq!(&*scope_name("t", 'k', Some(0)), "t\x1fk0");
        assert_eq!(&*scope_name("public.t", 'k', Some(1023)), "public.t\x1fk1023");
        assert_eq!(&*scope_name("t", 'k', Some(u64::MAX)), format!("t\x1fk{}", u64::MAX));
        assert_eq!(&*wide("t"), "t\x1fw");
        for len in [73, 74, 75, 200] {
            let t = "é".repeat(len / 2) + &"t".repeat(len % 2);
            assert_eq!(&*scope_name(&t, 'k', Some(u64::MAX)), format!("{t}\x1fk{}", u64::MAX), "{len}");
            assert_eq!(&*scope_name(&t, 'w', None), format!("{t}\x1fw"), "{len}");
        }
    }

    #[test]
    fn one_row_named_three_ways_is_one_key() {
        let bin = canonical_param(Family::Int, 0, Cast::None, 1, &42i32.to_be_bytes()).unwrap();
        assert_eq!(canonical_param(Family::Int, 20, Cast::None, 1, &42i64.to_be_bytes()).unwrap(), bin);
        assert_eq!(canonical_param(Family::Int, 0, Cast::Int, 0, b"42").unwrap(), bin);
        assert_eq!(canonical_text(Family::Int, "42").unwrap(), bin);
        assert_eq!(canonical_text(Family::Int, "042").unwrap(), bin, "the value, not the spelling");
        assert_eq!(canonical_text(Family::Int, " 42"), None);
        assert_eq!(canonical_text(Family::Int, "+42"), None);
        for n in [0, 7, -7, 10, i64::MAX, i64::MIN] {
            assert_eq!(decimal(n), n.to_string().into_bytes(), "{n}");
        }
        assert_eq!(canonical_text(Family::Int, "-0").unwrap(), b"0");
        assert_eq!(canonical_param(Family::Int, 700, Cast::None, 1, &1f32.to_be_bytes()), None, "a float4 parameter");
        assert_eq!(canonical_param(Family::Int, 0, Cast::Text, 0, b"42"), None, "cast to another family");
        let u = "3F2504E0-4F89-11D3-9A0C-0305E82C3301";
        let raw: Vec<u8> =
            (0..16).map(|i| u8::from_str_radix(&u.replace('-', "")[i * 2..i * 2 + 2], 16).unwrap()).collect();
        assert_eq!(canonical_param(Family::Uuid, 2950, Cast::None, 1, &raw), canonical_text(Family::Uuid, u));
        assert_eq!(canonical_text(Family::Uuid, &u.to_lowercase()), canonical_text(Family::Uuid, u));
        assert_eq!(canonical_text(Family::Uuid, "{3f2504e0-4f89-11d3-9a0c-0305e82c3301}"), None);
        assert_eq!(canonical_text(Family::Text, "k1"), Some(b"k1".to_vec()));
        assert_eq!(canonical_text(Family::Text, "é"), None);
    }

    #[test]
    fn writes_merge_and_collapse_past_the_bound() {
        let (t, u): (Arc<str>, Arc<str>) = (Arc::from("t"), Arc::from("u"));
        let w = Written::key(&t, WriteKind::Update, b"1");
        let (_, slot) = w.key.unwrap();
        assert_eq!(key_scope("t", slot.into()), read_scopes("t", b"1")[1], "a write's slot is the read's");
        let mut list: WriteList = smallvec::smallvec![Written::table(Arc::from("a"))];
        add(&mut list, w.clone());
        add(&mut list, Written::key(&Arc::from("t"), WriteKind::Update, b"1"));
        assert_eq!(list.len(), 2, "the same key of the same table (another Arc) once");
        add(&mut list, Written::key(&t, WriteKind::Delete, b"1"));
        assert_eq!(list.len(), 3, "another kind of write is another entry");
        add(&mut list, Written::key(&Arc::from("a"), WriteKind::Delete, b"9"));
        assert_eq!(list.len(), 3, "covered by the table-level write");
        add(&mut list, Written::key(&u, WriteKind::Delete, b"x"));
        for i in 0..(4 * MAX_KEYS) {
            add(&mut list, Written::key(&t, WriteKind::Delete, i.to_string().as_bytes()));
            assert!(list.len() <= MAX_KEYS + 1, "keyed writes kept up to the bound");
        }
        let names: Vec<(&str, bool)> = list.iter().map(|w| (&*w.table, w.key.is_some())).collect();
        assert_eq!(names, [("a", false), ("t", false), ("u", false)], "then their tables");
    }
}
