//! Hostile SQL: the tokenizer and the first-word scans run on every statement, the parser-backed analysis
//! (pg_query: fingerprint, tables, keys, cacheability) on what the proxy analyzes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = pgpilot::frontend::sql_scan::may_matter(data);
    let Ok(sql) = std::str::from_utf8(data) else { return };
    let _ = pgpilot::sql::tokens::shapes_with(sql, true);
    let shapes = pgpilot::sql::tokens::shapes_with(sql, false);
    let _ = pgpilot::frontend::sql_scan::deallocate_of(sql);
    let analyzer = pgpilot::sql::Analyzer::new(16);
    let analyzed = analyzer.analyze_shapes(sql, &shapes, false);
    let _ = pgpilot::frontend::sql_scan::from_analyses(sql, &shapes, &analyzed);
    let _ = analyzer.analyze_all(sql);
});
