//! Statement analysis: fingerprint, normalized text, kind, tables, volatility and row locks, from
//! PostgreSQL's own grammar (libpg_query). Results are cached by the statement's token shape
//! (`tokens`), so a statement that differs from an earlier one only in literals costs a token
//! pass and a cache lookup, not a parse.

pub mod builtins;
pub mod function_body;
pub mod functions;
pub mod hint;
pub mod keyed;
pub mod learned;
pub mod literal_key;
pub mod names;
mod nesting;
pub mod parse;
pub mod recent;
pub mod rematch;
pub mod session_effect;
pub mod tokens;
pub mod two_phase;

use std::sync::Arc;

use moka::sync::Cache;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StatementKind {
    Read,
    Write,
    Ddl,
    Transaction,
    Utility,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Analysis {
    /// pg_query's fingerprint (or a hash of the token shape when the parser rejects the text).
    pub fingerprint: u64,
    /// Literals as `$n`, IN lists collapsed (for DML; other statements keep what libpg_query
    /// leaves, literals included): what the analysis reads, never what is shown.
    pub normalized: String,
    /// What the surfaces show (/queries, SHOW QUERIES, the slow log, N+1 findings): the
    /// normalized text of a SELECT/INSERT/UPDATE/DELETE/MERGE, whose literals libpg_query
    /// replaces; for anything else (COMMENT ... IS 'x', PREPARE p AS SELECT 'x', DO, COPY, SET,
    /// a text the parser rejects) a placeholder naming only the statement's type.
    pub shown: Arc<str>,
    pub kind: StatementKind,
    pub tables_read: Vec<String>,
    pub tables_written: Vec<String>,
    pub volatile: bool,
    pub locks_rows: bool,
    /// LIMIT/OFFSET driven by a parameter or literal: a page of a larger read.
    pub paginated: bool,
    /// False when the parser rejected the text and the token fallback was used.
    pub parsed: bool,
    /// Every function called is a known stable built-in (a precondition for caching the result).
    pub functions_stable: bool,
    /// Which tables the statement may change, for result-cache invalidation.
    pub writes: WriteScope,
    /// `tables_read` / `tables_written` unqualified, sorted, deduplicated: the names result-cache
    /// keys and invalidation use (computed once per statement shape, not per message).
    pub read_names: Arc<[Arc<str>]>,
    pub written_names: Arc<[Arc<str>]>,
    /// What the statement does to the result cache for the reads that follow it.
    pub cache_effect: CacheEffect,
    /// What it does to the server session (settings, role, pins), from the parse tree.
    pub session: session_effect::SessionEffect,
    /// The one table and the parameters that name the rows it reads or writes, when the text
    /// says so (`keyed`): the result cache's row-level invalidation starts here.
    pub keyed: Option<Arc<keyed::Keyed>>,
    /// What runs of this shape taught (shared by every session holding this analysis).
    pub learned: Arc<learned::Learned>,
}

/// Statements after which reads would see something the cache key does not reflect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheEffect {
    None,
    /// Until the transaction ends: SET / SET LOCAL / RESET, set_config(), a snapshot isolation
    /// level (BEGIN ... REPEATABLE READ / SERIALIZABLE, SET TRANSACTION).
    Transaction,
    /// For the rest of the session: a default isolation level pgpilot does not track.
    Session,
}

/// What a statement may change. `Unknown` (a user function, CALL, DO, EXECUTE, an unparsable
/// text) is treated as a write to every table of the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteScope {
    Nothing,
    /// The tables in `tables_written`.
    Tables,
    Unknown,
}

impl Analysis {
    pub fn fingerprint_hex(&self) -> String {
        format!("{:016x}", self.fingerprint)
    }
}

/// Each statement of a text with a hash of its own literal text.
pub type Analyzed = smallvec::SmallVec<[(Arc<Analysis>, u64); 1]>;

/// The shared analyzer with its shape-keyed cache.
pub struct Analyzer {
    /// Keyed by a 128-bit hash of the token shape seeded per process (long statements cost no
    /// key memory, and a client cannot craft a text whose shape collides with another's).
    cache: Cache<u128, Arc<Analysis>>,
    seed: u64,
    /// Parses running off the I/O threads at once: libpg_query cannot be interrupted, and a
    /// flood of new statements must not take every core from the threads that relay bytes.
    parsers: Arc<tokio::sync::Semaphore>,
    /// `insights.max_analyzed_bytes` (reloadable).
    max_analyzed: std::sync::atomic::AtomicUsize,
}

/// Texts longer than this are not analyzed (`insights.max_analyzed_bytes`).
pub const DEFAULT_MAX_ANALYZED: usize = 64 * 1024;

impl Analyzer {
    pub fn new(max_entries: u64) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let parsers = Arc::new(tokio::sync::Semaphore::new((cores / 2).max(1)));
        let max_analyzed = DEFAULT_MAX_ANALYZED.into();
        Self { cache: Cache::new(max_entries), seed: rand::random(), parsers, max_analyzed }
    }

    /// Texts longer than this many bytes are not analyzed.
    pub fn max_analyzed(&self) -> usize {
        self.max_analyzed.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn set_max_analyzed(&self, bytes: usize) {
        self.max_analyzed.store(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn key(&self, shape: &tokens::Shape) -> u128 {
        xxhash_rust::xxh3::xxh3_128_with_seed(shape.text.as_bytes(), self.seed)
    }

    /// `analyze_shapes` on a blocking thread, at most `parsers` at once: a statement whose parse
    /// takes seconds (a 500 KB AND chain) delays only its own client. A parser that panics gives
    /// the worst-case analysis (may write anything, state unknown) instead.
    pub async fn analyze_off_thread(self: &Arc<Self>, sql: Arc<str>, shapes: Arc<[tokens::Shape]>) -> Analyzed {
        let permit = self.parsers.clone().acquire_owned().await;
        let (me, text, pieces) = (self.clone(), sql.clone(), shapes.clone());
        let job = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            me.analyze_shapes(&text, &pieces, false)
        });
        job.await.unwrap_or_else(|e| {
            tracing::error!("statement analysis failed: {e}");
            self.analyze_shapes(&sql, &shapes, true)
        })
    }

    /// One analysis per statement in `sql` (a simple Query may hold several), each with a hash
    /// of its own text: the "parameters" of a statement whose values are inline literals.
    pub fn analyze_all(&self, sql: &str) -> Analyzed {
        self.analyze_shapes(sql, &tokens::shapes(sql), false)
    }

    /// As `analyze_all`, for shapes the caller already computed from `sql`. `opaque`: the text
    /// cannot be read as PostgreSQL will read it (backslash escapes in plain strings while
    /// standard_conforming_strings is off: the parser assumes it on; bytes past ASCII in another
    /// client encoding than UTF8: the server lexes the converted text), so every statement gets
    /// the analysis that assumes the worst.
    pub fn analyze_shapes(&self, sql: &str, shapes: &[tokens::Shape], opaque: bool) -> Analyzed {
        shapes
            .iter()
            .map(|shape| {
                let piece = sql[shape.start..shape.end].trim();
                let analysis = if opaque {
                    Arc::new(parse::opaque(&shape.text))
                } else {
                    self.cache.get_with(self.key(shape), || Arc::new(parse::analyze(piece, &shape.text)))
                };
                (analysis, tokens::params_hash(piece.as_bytes()))
            })
            .collect()
    }

    /// The analysis of a single-statement text; the first statement if there are several.
    #[cfg(test)]
    pub fn analyze(&self, sql: &str) -> Option<Arc<Analysis>> {
        self.analyze_all(sql).into_iter().next().map(|(a, _)| a)
    }
}

#[cfg(test)]
mod speed {
    //! Benchmark, not a timed test: `cargo test --release --lib analysis_cost -- --ignored --nocapture`
    //! prints what an analysis costs on a cache miss and on a hit (numbers in docs/BENCHMARKS.md).
    use std::time::Instant;

    use super::Analyzer;

    #[test]
    #[ignore]
    fn analysis_cost() {
        let texts = [
            "SELECT abalance FROM pgbench_accounts WHERE aid = 12345",
            "SELECT code_chunks.id, code_chunks.content FROM code_chunks JOIN code_files ON code_chunks.code_file_id = code_files.id WHERE code_files.is_deleted = false AND code_files.relative_path LIKE $4 ORDER BY code_chunks.embedding <=> $2::vector LIMIT $5",
            "WITH RECURSIVE d AS (SELECT id, parent_id FROM work_items WHERE id = $1 UNION ALL SELECT w.id, w.parent_id FROM work_items w JOIN d ON w.parent_id = d.id) SELECT * FROM d",
        ];
        for text in texts {
            let n = 2000;
            let a = Analyzer::new(10);
            let t = Instant::now();
            for i in 0..n {
                // a new shape every time: the parser runs
                let _ = a.analyze(&format!("{text} /* {i} */ AND {i} = {i}"));
                a.cache.invalidate_all();
            }
            let miss = t.elapsed() / n;
            let t = Instant::now();
            for i in 0..n {
                // the same shape with new literals: a token pass and a cache hit
                let _ = a.analyze(&text.replace("12345", &i.to_string()));
            }
            let hit = t.elapsed() / n;
            println!("{:>4} bytes: miss {miss:?}, hit {hit:?}  ({})", text.len(), &text[..40]);
        }
    }
}
