//! Statistics per (database, user, fingerprint): calls, errors, rows, times and a latency
//! histogram (p50/p95/p99), bounded by an LRU over fingerprints.

use std::borrow::Cow;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use parking_lot::Mutex;

use super::{Completed, Origin};
use crate::sql::{Analysis, StatementKind};

/// (database, user) by `Origin`'s hash of the two, and the fingerprint: two numbers, copied
/// and compared without a lock held longer than that. Two origins sharing a hash would share
/// rows; with 64 bits seeded per process (`Origin::new`) that is as likely as two fingerprints
/// colliding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    origin: u64,
    fingerprint: u64,
}

struct Entry {
    /// The names of the key's origin, as its first call gave them.
    database: Arc<str>,
    user: Arc<str>,
    analysis: Arc<Analysis>,
    calls: u64,
    errors: u64,
    rows: u64,
    total_us: u64,
    min_us: u64,
    max_us: u64,
    client_total_us: u64,
    /// Server time per call, microseconds, 2 significant digits (about 2 KiB per fingerprint).
    hist: Histogram<u64>,
    /// `hist` as it was when the strategy last started its recent window: recent calls are
    /// `hist - recent_base`, computed at the strategy's tick, never on the statement's path.
    recent_base: Histogram<u64>,
    last_params: u64,
    repeated_identical: u64,
    cache_hits: u64,
    /// Wall-clock ms of its first call.
    first_ms: u64,
}

impl Entry {
    fn new(origin: &Origin, analysis: Arc<Analysis>) -> Self {
        Self {
            database: origin.database.clone(),
            user: origin.user.clone(),
            analysis,
            calls: 0,
            errors: 0,
            rows: 0,
            total_us: 0,
            min_us: u64::MAX,
            max_us: 0,
            client_total_us: 0,
            hist: Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("valid histogram bounds"),
            recent_base: Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("valid histogram bounds"),
            last_params: 0,
            repeated_identical: 0,
            cache_hits: 0,
            first_ms: crate::clock::wall_ms(),
        }
    }
}

/// Orders rows by a field (descending); unknown fields fall back to total_ms.
pub fn sort_rows(rows: &mut [QueryRow], by: &str) {
    let key = |r: &QueryRow| -> f64 {
        match by {
            "calls" => r.calls as f64,
            "errors" => r.errors as f64,
            "rows" => r.rows as f64,
            "mean_ms" => r.mean_ms,
            "p50_ms" => r.p50_ms,
            "p95_ms" => r.p95_ms,
            "p99_ms" => r.p99_ms,
            "max_ms" => r.max_ms,
            "repeated_identical" => r.repeated_identical as f64,
            _ => r.total_ms,
        }
    };
    rows.sort_by(|a, b| key(b).total_cmp(&key(a)));
}

/// A row of GET /queries and SHOW QUERIES.
#[derive(Debug, Clone, serde::Serialize)]
pub struct QueryRow {
    pub fingerprint: String,
    pub query: String,
    pub database: String,
    pub user: String,
    pub kind: StatementKind,
    pub calls: u64,
    pub errors: u64,
    pub rows: u64,
    pub total_ms: f64,
    pub mean_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub client_mean_ms: f64,
    pub cache_hits: u64,
    pub repeated_identical: u64,
    /// What pgpilot does with this fingerprint (`cache` | `slow-lane` | `server-prepared` |
    /// `pass-through`), why, and since when (wall-clock ms).
    pub strategy: &'static str,
    pub strategy_reason: std::borrow::Cow<'static, str>,
    pub since: u64,
    #[serde(skip)]
    pub p_us: [u64; 3],
}

/// One fingerprint as the strategy sees it (`lane_inputs`).
pub struct LaneInput {
    pub database: Arc<str>,
    pub user: Arc<str>,
    pub analysis: Arc<Analysis>,
    pub calls: u64,
    pub p95_us: u64,
}

pub struct QueryStats {
    /// One lock for both: a statement run records in its entry and in `all` (a second mutex
    /// cost every run ~40 instructions).
    map: Mutex<Recorded>,
}

struct Recorded {
    /// foldhash (seeded per process), not SipHash: hashed once per statement run.
    entries: lru::LruCache<Key, Entry, foldhash::fast::RandomState>,
    /// All statements together (with their summed time in µs), for the "other" series.
    all: (Histogram<u64>, u64),
}

/// Bucket bounds (seconds) of pgpilot_query_duration_seconds: the same as every histogram's.
use crate::metrics::BUCKETS;

impl QueryStats {
    pub fn new(max_fingerprints: usize) -> Self {
        let cap = NonZeroUsize::new(max_fingerprints.max(1)).expect("non-zero");
        Self {
            map: Mutex::new(Recorded {
                entries: lru::LruCache::with_hasher(cap, foldhash::fast::RandomState::default()),
                all: (Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("valid histogram bounds"), 0),
            }),
        }
    }

    pub fn record(&self, origin: &Origin, c: &Completed) {
        let us = (c.server_time.as_micros() as u64).max(1);
        let key = Key { origin: origin.stats_key, fingerprint: c.analysis.fingerprint };
        let mut map = self.map.lock();
        {
            let e = map.entries.get_or_insert_mut(key, || Entry::new(origin, c.analysis.clone()));
            e.calls += 1;
            e.cache_hits += c.cached as u64;
            e.errors += c.error as u64;
            e.rows += c.rows;
            e.total_us += us;
            e.min_us = e.min_us.min(us);
            e.max_us = e.max_us.max(us);
            e.client_total_us += c.client_time.as_micros() as u64;
            let _ = e.hist.record(us);
            if e.calls > 1 && c.params == e.last_params && c.analysis.kind == StatementKind::Read {
                e.repeated_identical += 1;
            }
            e.last_params = c.params;
        }
        let _ = map.all.0.record(us);
        map.all.1 += us;
    }

    /// `cache_on`: the result cache is enabled (else every fingerprint passes through).
    pub fn rows(&self, cache_on: bool) -> Vec<QueryRow> {
        use std::sync::atomic::Ordering::Relaxed;
        let map = self.map.lock();
        map.entries
            .iter()
            .map(|(_, e)| {
                let ms = |us: u64| us as f64 / 1000.0;
                let p = |q: f64| e.hist.value_at_quantile(q);
                let strategy = strategy(&e.analysis, cache_on);
                QueryRow {
                    fingerprint: e.analysis.fingerprint_hex(),
                    query: e.analysis.shown.to_string(),
                    database: e.database.to_string(),
                    user: e.user.to_string(),
                    kind: e.analysis.kind,
                    calls: e.calls,
                    errors: e.errors,
                    rows: e.rows,
                    total_ms: ms(e.total_us),
                    mean_ms: ms(e.total_us) / e.calls.max(1) as f64,
                    min_ms: if e.calls == 0 { 0.0 } else { ms(e.min_us) },
                    max_ms: ms(e.max_us),
                    p50_ms: ms(p(0.5)),
                    p95_ms: ms(p(0.95)),
                    p99_ms: ms(p(0.99)),
                    client_mean_ms: ms(e.client_total_us) / e.calls.max(1) as f64,
                    cache_hits: e.cache_hits,
                    repeated_identical: e.repeated_identical,
                    strategy: strategy.0,
                    strategy_reason: strategy.1,
                    since: e
                        .first_ms
                        .max(e.analysis.learned.skipped_changed_ms.load(Relaxed))
                        .max(e.analysis.learned.lane_changed_ms.load(Relaxed)),
                    p_us: [p(0.5), p(0.95), p(0.99)],
                }
            })
            .collect()
    }

    /// What the strategy decides lanes from: per fingerprint its calls and p95 (µs) of its recent
    /// calls when there are `min_recent` of them, else of all; `restart` starts the recent ones over.
    pub fn lane_inputs(&self, min_recent: u64, restart: bool) -> Vec<LaneInput> {
        let mut map = self.map.lock();
        map.entries
            .iter_mut()
            .map(|(_, e)| {
                let recent_calls = e.hist.len().saturating_sub(e.recent_base.len());
                let recent = (recent_calls >= min_recent.max(1))
                    .then(|| {
                        let mut h = e.hist.clone();
                        h.subtract(&e.recent_base).ok().map(|_| h.value_at_quantile(0.95))
                    })
                    .flatten();
                let (p95_us, calls) = match recent {
                    Some(p95) => (p95, recent_calls),
                    None => (e.hist.value_at_quantile(0.95), e.calls),
                };
                if restart {
                    e.recent_base = e.hist.clone();
                }
                LaneInput {
                    database: e.database.clone(),
                    user: e.user.clone(),
                    analysis: e.analysis.clone(),
                    calls,
                    p95_us,
                }
            })
            .collect()
    }

    /// pgpilot_query_duration_seconds: the `top_k` fingerprints by total time get their own
    /// series; everything else is summed under fingerprint="other", so sums over the label are exact.
    pub fn render_prometheus(&self, top_k: usize, out: &mut String) {
        use std::fmt::Write;
        let map = self.map.lock();
        let mut top: Vec<&Entry> = map.entries.iter().map(|(_, e)| e).collect();
        top.sort_by_key(|e| std::cmp::Reverse(e.total_us));
        top.truncate(top_k);
        let (all, all_sum) = (&map.all.0, map.all.1);
        let name = "pgpilot_query_duration_seconds";
        let _ =
            writeln!(out, "# HELP {name} Server time per statement, by fingerprint (top by total time, rest as other)");
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut other: Vec<u64> = BUCKETS.iter().map(|b| all.count_between(0, (b * 1e6) as u64)).collect();
        let (mut other_count, mut other_sum) = (all.len(), all_sum);
        for e in &top {
            let labels = format!(
                "database=\"{}\",user=\"{}\",fingerprint=\"{}\"",
                esc(&e.database),
                esc(&e.user),
                e.analysis.fingerprint_hex()
            );
            for (i, b) in BUCKETS.iter().enumerate() {
                let n = e.hist.count_between(0, (b * 1e6) as u64);
                other[i] = other[i].saturating_sub(n);
                let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{b}\"}} {n}");
            }
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", e.hist.len());
            let _ = writeln!(out, "{name}_sum{{{labels}}} {}", e.total_us as f64 / 1e6);
            let _ = writeln!(out, "{name}_count{{{labels}}} {}", e.hist.len());
            other_count = other_count.saturating_sub(e.hist.len());
            other_sum = other_sum.saturating_sub(e.total_us);
        }
        let labels = "database=\"\",user=\"\",fingerprint=\"other\"";
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{b}\"}} {}", other[i]);
        }
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {other_count}");
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", other_sum as f64 / 1e6);
        let _ = writeln!(out, "{name}_count{{{labels}}} {other_count}");
    }

    pub fn len(&self) -> usize {
        self.map.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Slow-statement threshold check and log line (normalized text only: no literals). The
/// threshold is on server time; `proxy_ms` is the rest of what the client waited (pool wait,
/// statement analysis, pgpilot's own queueing), so a stall in pgpilot is not read as the server's.
pub fn log_if_slow(origin: &Origin, c: &Completed, threshold: Duration) -> bool {
    let t = c.server_time;
    if t < threshold {
        return false;
    }
    tracing::warn!(
        target: "pgpilot::slow",
        duration_ms = t.as_secs_f64() * 1000.0,
        proxy_ms = c.client_time.saturating_sub(t).as_secs_f64() * 1000.0,
        database = %origin.database,
        user = %origin.user,
        application_name = %origin.application_name,
        fingerprint = %c.analysis.fingerprint_hex(),
        query = %c.analysis.shown,
        "slow query"
    );
    true
}

/// The strategy a fingerprint gets now and why: an operator's pin, the slow lane, the result
/// cache (a cacheable read whose results repeat, or not measured yet), a server-prepared statement
/// (measured no slower), or straight to the server.
fn strategy(a: &Analysis, cache_on: bool) -> (&'static str, Cow<'static, str>) {
    use crate::sql::learned::{Pinned, PreparedPhase};
    use std::sync::atomic::Ordering::Relaxed;
    match a.learned.pinned() {
        Some(Pinned::Cache) if cache_on && cacheable(a).is_ok() => {
            return ("cache", "pinned by [[strategy.pins]]: always looked up in the result cache".into())
        }
        Some(Pinned::PassThrough) => return ("pass-through", "pinned by [[strategy.pins]]".into()),
        Some(Pinned::SlowLane) => return ("slow-lane", "pinned by [[strategy.pins]]".into()),
        _ => {}
    }
    if a.learned.slow_lane.load(Relaxed) {
        return (
            "slow-lane",
            "its p95 is above strategy.slow_lane_factor times its pool's median p95: it holds at most \
             strategy.slow_lane_share of the pool's connections (cache lookups as for any read)"
                .into(),
        );
    }
    let reason = if !cache_on {
        "the result cache is off"
    } else if let Err(why) = cacheable(a) {
        why
    } else if a.learned.skipped() {
        "its results rarely repeat: the cache looks past it (admission)"
    } else {
        return ("cache", "a read whose results repeat (or not measured yet): looked up in the result cache".into());
    };
    if a.learned.unnamed.load(Relaxed) {
        let (unnamed, prepared) = crate::prepared::adaptive::typical(&a.learned);
        let (ms, pms) = (unnamed / 1000.0, prepared / 1000.0);
        match a.learned.prepared_phase() {
            PreparedPhase::Kept => {
                let why = format!("server-prepared measured no slower: {pms:.3} ms against {ms:.3} ms as sent unnamed");
                return ("server-prepared", why.into());
            }
            PreparedPhase::Dropped if unnamed == 0.0 => {
                let why =
                    format!("{reason}; server-prepared not decided within 10 minutes of measuring (tried again later)");
                return ("pass-through", why.into());
            }
            PreparedPhase::Dropped => {
                let why = format!("{reason}; server-prepared measured slower ({pms:.3} ms against {ms:.3} ms)");
                return ("pass-through", why.into());
            }
            PreparedPhase::Measuring => {}
        }
    }
    ("pass-through", reason.into())
}

/// Whether the analysis allows caching at all, or why not.
fn cacheable(a: &Analysis) -> Result<(), &'static str> {
    use crate::sql::{StatementKind, WriteScope};
    if a.kind != StatementKind::Read || a.writes != WriteScope::Nothing {
        Err("not a read: it invalidates what it writes")
    } else if !a.parsed || a.volatile || !a.functions_stable || a.locks_rows {
        Err("its result may change without a write (volatile or unknown function, row locks) or was not parsed")
    } else if a.read_names.is_empty() {
        Err("reads no table")
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Stamp;

    fn call(stats: &QueryStats, origin: &Origin, sql: &str) {
        let a = Arc::new(crate::sql::parse::analyze(sql, &crate::sql::tokens::shapes(sql)[0].text));
        stats.record(origin, &Completed::from_cache(a, 0, 1, Stamp::now()));
    }

    #[test]
    fn rows_are_per_database_user_and_fingerprint_with_their_names() {
        let stats = QueryStats::new(100);
        let (a, b) =
            (Origin::new("d".into(), "u1".into(), "x".into()), Origin::new("d".into(), "u2".into(), "y".into()));
        // (Same bytes joined without the separator: "d" + "u1" vs "du" + "1".)
        let c = Origin::new("du".into(), "1".into(), "x".into());
        for o in [&a, &a, &b, &c] {
            call(&stats, o, "SELECT 1 FROM t WHERE id = 5");
        }
        call(&stats, &Origin::new("d".into(), "u1".into(), "other app".into()), "SELECT 1 FROM t WHERE id = 7");
        call(&stats, &a, "SELECT 2 FROM t");
        let mut rows: Vec<(String, String, u64)> =
            stats.rows(true).into_iter().map(|r| (r.database, r.user, r.calls)).collect();
        rows.sort();
        let want = [("d", "u1", 1), ("d", "u1", 3), ("d", "u2", 1), ("du", "1", 1)]
            .map(|(d, u, n)| (d.to_string(), u.to_string(), n));
        assert_eq!(rows, want, "the application name is not part of the key, nor a literal; the fingerprint is");
    }
}
