//! The rows a bound statement reads or writes, as result-cache scopes (`cache::scopes`): a read
//! keyed on its table's primary key depends on that key only, and a write of known keys
//! invalidates only them. Anything not recognised here stays table-level, and so does a write
//! to a table nothing watches (`cache::generations`) whose writes reach no other table: a key
//! costs a catalog lookup and a name, and such a commit bumps nothing unless the table is
//! watched by then (then all of it). (Where foreign-key actions lead elsewhere, the key tells
//! which actions fire: an UPDATE keeping its key fires no ON DELETE.)

use std::sync::Arc;

use crate::cache::relations::Relations;
use crate::cache::scopes::{self, Family, WriteKind, WriteList, Written};
use crate::cache::{ResultCache, TableViews};
use crate::protocol::frontend::{bind_parameter, declared_type};
use crate::sql::keyed::{Keyed, Op};
use crate::sql::literal_key;
use crate::sql::tokens::Literals;

/// The scopes a keyed read depends on instead of its table, or None (table-level).
/// (`types`: what the statement's Parse declared, found only for a keyed statement: every Bind
/// passes here; `args`: the Bind after the statement name.)
pub fn read_scopes<'a>(
    relations: &Relations,
    db: &str,
    k: Option<&Keyed>,
    types: impl FnOnce() -> &'a [u8],
    args: &[u8],
) -> Option<[Arc<str>; 2]> {
    let k = k.filter(|k| k.op == Op::Read)?;
    let (column, family) = relations.key_column(db, &k.table)?;
    let [value] = values(k, &column, family, types(), args)?.try_into().ok()?;
    Some(scopes::read_scopes(&k.table, &value))
}

/// The keys a keyed write notes instead of its table, or None (table-level).
pub fn keyed_writes<'a>(
    (cache, views): (&ResultCache, &mut TableViews),
    db: &str,
    k: Option<&Keyed>,
    types: impl FnOnce() -> &'a [u8],
    args: &[u8],
) -> Option<WriteList> {
    let k = k?;
    let (column, family) = write_key((cache, views), db, k)?;
    let kind = match k.op {
        Op::Read => return None, // (no key above)
        // An UPDATE that assigns the key moves rows to keys the text does not give.
        Op::Update if k.sets.contains(&column) => return None,
        Op::Update => WriteKind::Update,
        Op::Delete => WriteKind::Delete,
        Op::Insert if !insert_keeps_keys(k, &column) => return None,
        Op::Insert => WriteKind::Insert,
    };
    let keys = values(k, &column, family, types(), args)?;
    let expected = if k.op == Op::Insert { k.rows } else { 1 };
    (keys.len() == expected).then(|| keys.iter().map(|v| Written::key(&k.table, kind, v)).collect())
}

/// The key column of a write's table when its keys are worth noting (`TableViews::write_key`).
fn write_key((cache, views): (&ResultCache, &mut TableViews), db: &str, k: &Keyed) -> Option<(Arc<str>, Family)> {
    if k.op == Op::Read {
        return None;
    }
    views.write_key(cache, db, &k.table)
}

/// A simple Query's keyed read (its key a literal in `text`, found at `literals`): the scopes it
/// depends on, or None.
pub fn literal_read_scopes(
    relations: &Relations,
    db: &str,
    k: Option<&Keyed>,
    text: &[u8],
    literals: &Literals,
) -> Option<[Arc<str>; 2]> {
    let k = k.filter(|k| k.op == Op::Read)?;
    let value = literal_value(relations.key_column(db, &k.table)?, k, text, literals)?;
    Some(scopes::read_scopes(&k.table, &value))
}

/// A simple Query's UPDATE or DELETE of one key given as a literal: the write it notes, or None.
pub fn literal_keyed_writes(
    (cache, views): (&ResultCache, &mut TableViews),
    db: &str,
    k: Option<&Keyed>,
    text: &[u8],
    literals: &Literals,
) -> Option<WriteList> {
    let k = k?;
    let kind = match k.op {
        Op::Update => WriteKind::Update,
        Op::Delete => WriteKind::Delete,
        Op::Read | Op::Insert => return None, // (before any lookup)
    };
    let key = write_key((cache, views), db, k)?;
    if k.op == Op::Update && k.sets.contains(&key.0) {
        return None; // an UPDATE that assigns the key moves rows to keys the text does not give
    }
    let value = literal_value(key, k, text, literals)?;
    Some(smallvec::smallvec![Written::key(&k.table, kind, &value)])
}

/// The canonical key value a statement's text gives its primary key: the analysis must have
/// exactly one `pk = constant` conjunct, and the shape must name the column once, as `pk =
/// literal` (`literal_key::position`, kept in the conjunct's `Bound`).
fn literal_value((column, family): (Arc<str>, Family), k: &Keyed, text: &[u8], at: &Literals) -> Option<Vec<u8>> {
    let mut on_key = k.bound.iter().filter(|b| b.column == column);
    let bound = on_key.next().filter(|_| on_key.next().is_none())?;
    let literal = literal_key::value(text, at, bound.literal?)?;
    scopes::canonical_param(family, 0, bound.cast, 0, &literal)
}

/// An INSERT touches only the keys it gives: no conflict clause, DO NOTHING, or DO UPDATE on
/// the key itself without assigning it.
fn insert_keeps_keys(k: &Keyed, column: &Arc<str>) -> bool {
    !k.opaque_conflict
        && match &k.conflict {
            None => true,
            Some(target) => target.len() == 1 && target[0] == *column && !k.sets.contains(column),
        }
}

/// The canonical values the statement gives `column` (one per conjunct or VALUES row); None
/// when one of them cannot be read (then nothing is keyed).
fn values(k: &Keyed, column: &Arc<str>, family: Family, types: &[u8], args: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for b in k.bound.iter().filter(|b| b.column == *column) {
        let index = usize::from(b.param).checked_sub(1)?;
        let (format, value) = bind_parameter(args, index)?;
        let declared = declared_type(types, index);
        out.push(scopes::canonical_param(family, declared, b.cast, format, value)?);
    }
    if k.op != Op::Insert {
        // `k = $1 AND k = $2`: both must match one row; keyed on the first, which is enough.
        out.truncate(1);
    }
    Some(out)
}
