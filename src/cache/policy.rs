//! Which reads may be cached and for how long: structural conditions from the analysis (a read
//! of tables, no volatile or unknown function, no row lock), then the first of: a comment hint in
//! the statement (`sql::hint`), a fingerprint rule, a table rule, the default TTL.

use std::collections::HashMap;
use std::time::Duration;

use crate::config::CacheConfig;
pub use crate::sql::hint::Hint;
use crate::sql::{Analysis, StatementKind};

pub struct Policy {
    default_ttl: u64,
    by_table: HashMap<String, u64>,
    by_fingerprint: HashMap<u64, u64>,
}

impl Policy {
    pub fn new(cfg: &CacheConfig) -> Self {
        let mut by_table = HashMap::new();
        let mut by_fingerprint = HashMap::new();
        for r in &cfg.rules {
            if let Some(t) = &r.table {
                by_table.entry(t.clone()).or_insert(r.ttl_s);
            }
            if let Some(fp) = r.fingerprint.as_deref().and_then(|f| u64::from_str_radix(f, 16).ok()) {
                by_fingerprint.entry(fp).or_insert(r.ttl_s);
            }
        }
        Self { default_ttl: cfg.default_ttl_s, by_table, by_fingerprint }
    }

    /// Some rule names a table or fingerprint.
    pub fn has_rules(&self) -> bool {
        !(self.by_table.is_empty() && self.by_fingerprint.is_empty())
    }

    /// The TTL for this read, or None when it must not be cached.
    #[cfg(test)]
    pub fn ttl(&self, a: &Analysis, hint: Hint) -> Option<Duration> {
        self.decide(a, hint).map(|(ttl, _)| ttl)
    }

    /// The TTL, and whether a hint or a rule asked for it (the cache then looks the read up
    /// whatever its admission learned: the user said it repeats).
    pub fn decide(&self, a: &Analysis, hint: Hint) -> Option<(Duration, bool)> {
        if !cacheable_shape(a) || hint == Hint::NoCache {
            return None;
        }
        let rule = || {
            self.by_fingerprint
                .get(&a.fingerprint)
                .or_else(|| a.read_names.iter().find_map(|t| self.by_table.get(&**t)))
        };
        let (ttl, asked) = match (hint, rule()) {
            (Hint::Ttl(n), _) if n > 0 => (n, true),
            (_, Some(&n)) => (n, true),
            (Hint::Ttl(_), None) => (if self.default_ttl == 0 { 300 } else { self.default_ttl }, true),
            (_, None) => (self.default_ttl, false),
        };
        (ttl > 0).then(|| (Duration::from_secs(ttl), asked))
    }
}

/// A plain read of tables whose result depends only on the data and the key.
fn cacheable_shape(a: &Analysis) -> bool {
    a.parsed
        && a.kind == StatementKind::Read
        && !a.tables_read.is_empty()
        && a.tables_written.is_empty()
        && !a.volatile
        && !a.locks_rows
        && a.functions_stable
        && !a.tables_read.iter().any(|t| t.starts_with("pg_catalog.") || t.starts_with("information_schema."))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CacheRule;

    fn analysis(sql: &str) -> Analysis {
        crate::sql::parse::analyze(sql, &crate::sql::tokens::shapes(sql)[0].text)
    }

    #[test]
    fn rules_and_conditions() {
        let mut cfg = CacheConfig::default();
        let read = analysis("SELECT * FROM public.work_items WHERE id = $1");
        cfg.rules = vec![
            CacheRule { table: Some("work_items".into()), fingerprint: None, ttl_s: 30 },
            CacheRule { table: None, fingerprint: Some(read.fingerprint_hex()), ttl_s: 0 },
        ];
        let p = Policy::new(&cfg);
        assert_eq!(&*read.read_names[0], "work_items");
        assert_eq!(p.ttl(&read, Hint::None), None, "fingerprint rule first");
        assert_eq!(p.ttl(&read, Hint::Ttl(5)), Some(Duration::from_secs(5)), "hint before rules");
        let other = analysis("SELECT title FROM work_items");
        assert_eq!(p.ttl(&other, Hint::None), Some(Duration::from_secs(30)));
        let plain = analysis("SELECT * FROM entities");
        assert_eq!(p.ttl(&plain, Hint::None), Some(Duration::from_secs(300)));
        for never in [
            "SELECT now() FROM t",
            "SELECT * FROM t FOR UPDATE",
            "SELECT 1",
            "SELECT my_func(id) FROM t",
            "SELECT random() FROM t",
            "INSERT INTO t VALUES (1)",
            "WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x",
        ] {
            let a = analysis(never);
            assert_eq!(p.ttl(&a, Hint::Ttl(60)), None, "{never}");
        }
    }
}
