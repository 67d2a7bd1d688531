//! A cached result: the exact reply frames the server sent (RowDescription or NoData, then the
//! DataRows and CommandComplete), with what is needed to prove it still valid: the full key (a
//! hash match alone never serves a result), the tables it read and their generations at fill time.

use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};

pub struct Entry {
    /// The complete key bytes; compared on every hit.
    pub key: Bytes,
    /// RowDescription ('T') or NoData ('n').
    pub row_desc: Bytes,
    /// DataRows followed by the CommandComplete.
    pub body: Bytes,
    pub rows: u32,
    pub fingerprint: u64,
    pub tables: Arc<[Arc<str>]>,
    /// Local generations (flush epoch first, then one per table) when the fill started.
    pub gens: Vec<u64>,
    /// Redis generations (epoch first, then one per table) when the fill started; empty without Redis.
    pub remote: Vec<i64>,
    /// Wall-clock expiry (ms since the Unix epoch), shared with Redis and other replicas.
    pub expires_ms: u64,
}

impl Entry {
    /// What the entry costs the local tier (its weigher), capped for moka's u32 weights. The
    /// fixed part is what an entry costs beyond its bytes (allocations, moka's node and deque
    /// entries), measured as RSS growth over 180k small entries (docs/BENCHMARKS.md).
    pub fn weight(&self) -> u32 {
        let names: usize = self.tables.iter().map(|t| t.len() + 16).sum();
        let n = self.key.len() + self.row_desc.len() + self.body.len() + names + 8 * self.gens.len() + 480;
        n.min(u32::MAX as usize) as u32
    }

    /// From byte offset `from` in `body`, the end of the next `max_rows` DataRows (0: all), how
    /// many rows that is, and whether the Execute ends suspended (PortalSuspended).
    pub fn split_rows(&self, from: usize, max_rows: usize) -> (usize, usize, bool) {
        let mut at = from;
        let mut n = 0;
        while at + 5 <= self.body.len()
            && self.body[at] == crate::protocol::backend::DATA_ROW
            && (max_rows == 0 || n < max_rows)
        {
            let len = u32::from_be_bytes([self.body[at + 1], self.body[at + 2], self.body[at + 3], self.body[at + 4]]);
            at += 1 + len as usize;
            n += 1;
        }
        // PostgreSQL suspends a portal whenever a batch fills up, even if no row is left.
        let more = max_rows > 0 && n == max_rows;
        (at, n, more)
    }

    /// Serialized for Redis: a versioned header, then the length-prefixed parts.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = BytesMut::with_capacity(self.key.len() + self.row_desc.len() + self.body.len() + 128);
        b.put_slice(MAGIC);
        b.put_u64(self.expires_ms);
        b.put_u64(self.fingerprint);
        b.put_u32(self.rows);
        put_bytes(&mut b, &self.key);
        b.put_u16(self.tables.len() as u16);
        for t in self.tables.iter() {
            put_bytes(&mut b, t.as_bytes());
        }
        b.put_u16(self.remote.len() as u16);
        for g in &self.remote {
            b.put_i64(*g);
        }
        put_bytes(&mut b, &self.row_desc);
        put_bytes(&mut b, &self.body);
        b.to_vec()
    }

    /// Parses what `encode` wrote; anything malformed (another version, a corrupt value) is None.
    pub fn decode(data: &[u8]) -> Option<Entry> {
        let mut b = data;
        if b.len() < MAGIC.len() + 20 || &b[..MAGIC.len()] != MAGIC {
            return None;
        }
        b.advance(MAGIC.len());
        let expires_ms = b.get_u64();
        let fingerprint = b.get_u64();
        let rows = b.get_u32();
        let key = get_bytes(&mut b)?;
        let n = get_u16(&mut b)?;
        let mut tables = Vec::with_capacity(n.min(64) as usize);
        for _ in 0..n {
            tables.push(Arc::<str>::from(std::str::from_utf8(&get_bytes(&mut b)?).ok()?));
        }
        let n = get_u16(&mut b)? as usize;
        if b.len() < n * 8 {
            return None;
        }
        let remote = (0..n).map(|_| b.get_i64()).collect();
        let row_desc = get_bytes(&mut b)?;
        let body = get_bytes(&mut b)?;
        if !well_formed(&row_desc, b"Tn", b"Tn") || !well_formed(&body, b"D", b"C") {
            return None;
        }
        Some(Entry {
            key,
            row_desc,
            body,
            rows,
            fingerprint,
            tables: tables.into(),
            gens: Vec::new(),
            remote,
            expires_ms,
        })
    }
}

const MAGIC: &[u8] = b"PGPILOT1";

/// `frames` is a whole number of protocol frames: any of `middle`, then exactly one of `last`.
fn well_formed(frames: &[u8], middle: &[u8], last: &[u8]) -> bool {
    let mut rest = frames;
    while rest.len() >= 5 {
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        if len < 4 || rest.len() < 1 + len {
            return false;
        }
        let tag = rest[0];
        rest = &rest[1 + len..];
        if rest.is_empty() {
            return last.contains(&tag);
        }
        if !middle.contains(&tag) {
            return false;
        }
    }
    false
}

fn put_bytes(b: &mut BytesMut, v: &[u8]) {
    b.put_u32(v.len() as u32);
    b.put_slice(v);
}

fn get_u16(b: &mut &[u8]) -> Option<u16> {
    (b.len() >= 2).then(|| b.get_u16())
}

fn get_bytes(b: &mut &[u8]) -> Option<Bytes> {
    if b.len() < 4 {
        return None;
    }
    let n = b.get_u32() as usize;
    if b.len() < n {
        return None;
    }
    let v = Bytes::copy_from_slice(&b[..n]);
    b.advance(n);
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        let mut body = BytesMut::new();
        for i in 0..3u8 {
            body.put_slice(&[b'D', 0, 0, 0, 7, 0, 1, i]);
        }
        body.put_slice(b"C\0\0\0\x0dSELECT 3\0");
        Entry {
            key: Bytes::from_static(b"k"),
            row_desc: Bytes::from_static(b"n\0\0\0\x04"),
            body: body.freeze(),
            rows: 3,
            fingerprint: 9,
            tables: vec![Arc::from("t")].into(),
            gens: vec![0, 1],
            remote: vec![4, 5],
            expires_ms: 77,
        }
    }

    #[test]
    fn round_trip_and_corruption() {
        let e = entry();
        let d = Entry::decode(&e.encode()).expect("decodes");
        assert_eq!((d.key, d.row_desc, d.body, d.rows), (e.key.clone(), e.row_desc.clone(), e.body.clone(), 3));
        assert_eq!((d.remote, d.expires_ms, &*d.tables[0]), (vec![4, 5], 77, "t"));
        let enc = e.encode();
        for cut in 0..enc.len() {
            assert!(Entry::decode(&enc[..cut]).is_none(), "truncated at {cut}");
        }
        assert!(Entry::decode(b"garbage").is_none());
        let mut bad = entry();
        bad.body = Bytes::from_static(b"D\0\0\0\x09\0\x01");
        assert!(Entry::decode(&bad.encode()).is_none(), "a frame cut short");
    }

    #[test]
    fn rows_split_for_execute_with_a_row_limit() {
        let e = entry();
        assert_eq!(e.split_rows(0, 0), (24, 3, false));
        assert_eq!(e.split_rows(0, 2), (16, 2, true));
        assert_eq!(e.split_rows(16, 2), (24, 1, false));
        assert_eq!(e.split_rows(0, 3), (24, 3, true), "a full batch suspends even at the end");
        assert_eq!(e.split_rows(24, 3), (24, 0, false));
    }
}
