//! Statement analysis: fingerprint, normalized text, kind, tables, volatility and row locks, from
//! PostgreSQL's own grammar (libpg_query). Results are cached by the statement's token shape
//! (`tokens`), so a statement that differs from an earlier one only in literals costs a token
//! pass and a cache lookup, not a parse.

pub mod builtins;
pub mod functions;
pub mod learned;
pub mod parse;
pub mod session_effect;
pub mod tokens;

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
    /// Literals as `$n`, IN lists collapsed: safe to show and to label with.
    pub normalized: String,
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
pub type Analyzed = Vec<(Arc<Analysis>, u64)>;

/// The shared analyzer with its shape-keyed cache.
pub struct Analyzer {
    /// Keyed by a 128-bit hash of the token shape seeded per process (long statements cost no
    /// key memory, and a client cannot craft a text whose shape collides with another's).
    cache: Cache<u128, Arc<Analysis>>,
    seed: u64,
}

impl Analyzer {
    pub fn new(max_entries: u64) -> Self {
        Self { cache: Cache::new(max_entries), seed: rand::random() }
    }

    /// One analysis per statement in `sql` (a simple Query may hold several), each with a hash
    /// of its own text: the "parameters" of a statement whose values are inline literals.
    pub fn analyze_all(&self, sql: &str) -> Analyzed {
        self.analyze_shapes(sql, &tokens::shapes(sql), false)
    }

    /// As `analyze_all`, for shapes the caller already computed from `sql`. `opaque`: the text
    /// cannot be read as PostgreSQL will read it (backslash escapes in plain strings while
    /// standard_conforming_strings is off: the parser assumes it on), so every statement gets
    /// the analysis that assumes the worst.
    pub fn analyze_shapes(&self, sql: &str, shapes: &[tokens::Shape], opaque: bool) -> Analyzed {
        shapes
            .iter()
            .map(|shape| {
                let piece = sql[shape.start..shape.end].trim();
                let analysis = if opaque {
                    Arc::new(parse::opaque(&shape.text))
                } else {
                    let key = xxhash_rust::xxh3::xxh3_128_with_seed(shape.text.as_bytes(), self.seed);
                    self.cache.get_with(key, || Arc::new(parse::analyze(piece, &shape.text)))
                };
                (analysis, tokens::fnv1a(piece.as_bytes()))
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
