//! N+1 detection (Sentry's rule, per client connection): a read that returned rows (the source)
//! followed by at least `threshold` executions of one other read fingerprint with distinct
//! parameters, each waiting for the previous one (not a pipeline or executemany batch), each
//! within `window` of the previous, interleaved only with transaction control, the loop taking
//! at least `min_total` from its first execution sent to its last finished (the cost of an N+1
//! is mostly round trips, not server time), and no more executions than the source returned rows
//! (a loop over its rows). Paginated reads (LIMIT/OFFSET) are never the repeated query. A burst
//! is judged when it ends: another statement, a gap past the window, or the session's end.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::clock::Stamp;

use parking_lot::Mutex;

use super::{Completed, Origin};
use crate::sql::{Analysis, StatementKind};

#[derive(Debug, Clone, Copy)]
pub struct Rules {
    pub threshold: usize,
    pub window: Duration,
    pub min_total: Duration,
}

impl Rules {
    pub fn from_config(cfg: &crate::config::InsightsConfig) -> Self {
        Self {
            threshold: cfg.n_plus_one_threshold.max(2),
            window: Duration::from_millis(cfg.n_plus_one_window_ms),
            min_total: Duration::from_millis(cfg.n_plus_one_min_total_ms),
        }
    }
}

impl Default for Rules {
    fn default() -> Self {
        Self { threshold: 5, window: Duration::from_millis(500), min_total: Duration::from_millis(50) }
    }
}

struct Source {
    analysis: Arc<Analysis>,
    rows: u64,
    done: Stamp,
}

struct Burst {
    source: Source,
    repeated: Arc<Analysis>,
    count: usize,
    params: HashSet<u64>,
    first_sent: Stamp,
    last_done: Stamp,
}

/// Per-session detector state.
#[derive(Default)]
pub struct Detector {
    source: Option<Source>,
    burst: Option<Burst>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Finding {
    pub source_query: String,
    pub repeated_query: String,
    pub fingerprint: String,
    pub count: usize,
    pub occurrences: u64,
    pub total_ms: f64,
    pub database: String,
    pub user: String,
    pub application_name: String,
    pub suggestion: String,
    #[serde(skip)]
    last_logged: Option<Instant>,
}

/// (database, user, application_name, source fingerprint, repeated fingerprint)
type FindingKey = (String, String, String, u64, u64);

/// Findings across sessions, aggregated per (origin, source, repeated).
#[derive(Default)]
pub struct Findings {
    map: Mutex<HashMap<FindingKey, Finding>>,
}

const MAX_FINDINGS: usize = 1000;
const LOG_INTERVAL: Duration = Duration::from_secs(60);

impl Detector {
    /// Feeds one completed statement; a burst that ends here is judged and maybe reported.
    pub fn observe(&mut self, c: &Completed, rules: &Rules, origin: &Origin, findings: &Findings) {
        if c.analysis.kind == StatementKind::Transaction {
            return;
        }
        let continues = self.burst.as_ref().is_some_and(|b| {
            b.repeated.fingerprint == c.analysis.fingerprint
                && !c.pipelined
                && c.sent.saturating_duration_since(b.last_done) <= rules.window
        });
        if continues {
            let b = self.burst.as_mut().expect("checked");
            b.count += 1;
            b.params.insert(c.params);
            b.last_done = c.done;
            return;
        }
        self.finish(rules, origin, findings);
        let is_read = c.analysis.kind == StatementKind::Read && !c.error;
        if let Some(src) = self.source.take() {
            let candidate = is_read
                && !c.pipelined
                && !c.analysis.paginated
                && src.analysis.fingerprint != c.analysis.fingerprint
                && c.sent.saturating_duration_since(src.done) <= rules.window;
            if candidate {
                self.burst = Some(Burst {
                    source: src,
                    repeated: c.analysis.clone(),
                    count: 1,
                    params: HashSet::from([c.params]),
                    first_sent: c.sent,
                    last_done: c.done,
                });
            }
        }
        if is_read && c.rows > 0 {
            self.source = Some(Source { analysis: c.analysis.clone(), rows: c.rows, done: c.done });
        }
    }

    /// Judges the burst in progress (at its end, or when the session ends).
    pub fn finish(&mut self, rules: &Rules, origin: &Origin, findings: &Findings) {
        let Some(b) = self.burst.take() else { return };
        let elapsed = b.last_done.saturating_duration_since(b.first_sent);
        let qualifies = b.count >= rules.threshold
            && b.params.len() >= rules.threshold
            && elapsed >= rules.min_total
            && b.count as u64 <= b.source.rows;
        if qualifies {
            findings.report(origin, &b, elapsed);
        }
    }
}

impl Findings {
    fn key(origin: &Origin, b: &Burst) -> FindingKey {
        (
            origin.database.to_string(),
            origin.user.to_string(),
            origin.application_name.to_string(),
            b.source.analysis.fingerprint,
            b.repeated.fingerprint,
        )
    }

    fn report(&self, origin: &Origin, b: &Burst, elapsed: Duration) {
        crate::metrics::n_plus_one_detected();
        let mut map = self.map.lock();
        if map.len() >= MAX_FINDINGS && !map.contains_key(&Self::key(origin, b)) {
            return;
        }
        let f = map.entry(Self::key(origin, b)).or_insert_with(|| Finding {
            source_query: b.source.analysis.shown.to_string(),
            repeated_query: b.repeated.shown.to_string(),
            fingerprint: b.repeated.fingerprint_hex(),
            count: 0,
            occurrences: 0,
            total_ms: 0.0,
            database: origin.database.to_string(),
            user: origin.user.to_string(),
            application_name: origin.application_name.to_string(),
            suggestion: suggestion(&b.source.analysis, &b.repeated),
            last_logged: None,
        });
        f.occurrences += 1;
        f.count = f.count.max(b.count);
        f.total_ms += elapsed.as_secs_f64() * 1000.0;
        if f.last_logged.is_none_or(|t| t.elapsed() >= LOG_INTERVAL) {
            f.last_logged = Some(Instant::now());
            tracing::warn!(
                database = %f.database, user = %f.user, application_name = %f.application_name,
                source = %f.source_query, repeated = %f.repeated_query, count = b.count,
                "N+1 query pattern: {}", f.suggestion
            );
        }
    }

    pub fn list(&self) -> Vec<Finding> {
        let mut v: Vec<Finding> = self.map.lock().values().cloned().collect();
        v.sort_by(|a, b| b.total_ms.total_cmp(&a.total_ms));
        v
    }
}

fn suggestion(source: &Analysis, repeated: &Analysis) -> String {
    let same_table = !repeated.tables_read.is_empty() && repeated.tables_read == source.tables_read;
    let q = repeated.normalized.to_ascii_lowercase();
    if same_table && q.contains("parent") {
        return format!(
            "walk the hierarchy in one query with WITH RECURSIVE (start from the rows of `{}` and join children on their parent column) instead of one `{}` per row",
            source.shown, repeated.shown
        );
    }
    format!(
        "fetch all rows at once: collect the keys from `{}` and run `{}` once with `= ANY($1)` over an array of them (or JOIN it into the first query)",
        source.shown,
        repeated.shown.replacen("= $1", "= ANY($1)", 1)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn analysis(fp: u64, text: &str, paginated: bool) -> Arc<Analysis> {
        Arc::new(Analysis {
            fingerprint: fp,
            normalized: text.into(),
            shown: text.into(),
            kind: StatementKind::Read,
            tables_read: vec!["work_items".into()],
            tables_written: vec![],
            volatile: false,
            locks_rows: false,
            paginated,
            parsed: true,
            functions_stable: true,
            writes: crate::sql::WriteScope::Nothing,
            read_names: Arc::from([Arc::from("work_items")]),
            written_names: Arc::from([]),
            cache_effect: crate::sql::CacheEffect::None,
            session: Default::default(),
            keyed: None,
            learned: Default::default(),
        })
    }

    struct Clock(Stamp);
    impl Clock {
        fn run(&mut self, a: &Arc<Analysis>, params: u64, rows: u64, ms: u64, pipelined: bool) -> Completed {
            let sent = self.0 + Duration::from_millis(1);
            let done = sent + Duration::from_millis(ms);
            self.0 = done;
            Completed {
                analysis: a.clone(),
                params,
                sent,
                done,
                server_time: Duration::from_millis(ms),
                client_time: Duration::from_millis(ms),
                rows,
                error: false,
                pipelined,
                cached: false,
                run_via: Default::default(),
            }
        }
    }

    fn origin() -> Origin {
        Origin::new("d".into(), "u".into(), "a".into())
    }

    fn run(seq: &[(u64, u64, u64, bool)], paginated_child: bool) -> Vec<Finding> {
        let src = analysis(1, "SELECT id FROM work_items WHERE parent_id IS NULL LIMIT $1", true);
        let child = analysis(2, "SELECT * FROM work_items WHERE parent_id = $1", paginated_child);
        let (mut d, f, mut clock) = (Detector::default(), Findings::default(), Clock(Stamp::now()));
        for &(which, params, rows, pipelined) in seq {
            let a = if which == 1 { &src } else { &child };
            let c = clock.run(a, params, rows, 12, pipelined);
            d.observe(&c, &Rules::default(), &origin(), &f);
        }
        d.finish(&Rules::default(), &origin(), &f);
        f.list()
    }

    #[test]
    fn a_loop_over_the_source_rows_is_found() {
        let mut seq = vec![(1, 0, 8, false)];
        seq.extend((0..8).map(|i| (2, 100 + i, 3, false)));
        let found = run(&seq, false);
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].count, found[0].occurrences), (8, 1));
        assert!(found[0].suggestion.contains("WITH RECURSIVE"));
    }

    #[test]
    fn batches_identical_repeats_pagination_and_short_loops_are_not() {
        let mut pipelined = vec![(1, 0, 8, false)];
        pipelined.extend((0..8).map(|i| (2, 100 + i, 1, true)));
        assert!(run(&pipelined, false).is_empty(), "executemany / pipeline");
        let mut identical = vec![(1, 0, 8, false)];
        identical.extend((0..8).map(|_| (2, 7, 1, false)));
        assert!(run(&identical, false).is_empty(), "same parameters");
        let mut pages = vec![(1, 0, 8, false)];
        pages.extend((0..8).map(|i| (2, i, 1, false)));
        assert!(run(&pages, true).is_empty(), "pagination");
        let mut more_than_rows = vec![(1, 0, 6, false)];
        more_than_rows.extend((0..8).map(|i| (2, i, 1, false)));
        assert!(run(&more_than_rows, false).is_empty(), "not driven by the source's rows");
        let mut short = vec![(1, 0, 8, false)];
        short.extend((0..3).map(|i| (2, i, 1, false)));
        assert!(run(&short, false).is_empty(), "below the threshold");
    }
}
