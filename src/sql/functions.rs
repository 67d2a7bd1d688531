//! What the functions a statement calls mean for caching: a result may be cached only when every
//! function it calls returns the same value for the same data (immutable or stable built-ins),
//! and a statement that calls a function pgpilot does not know may write anything (user-defined
//! functions are volatile by default in PostgreSQL and can modify tables).

/// Built-ins whose value depends only on their arguments, the data and the session settings
/// (those are part of the cache key): results that call them may be cached.
const STABLE: &[&str] = &[
    "abs",
    "array_agg",
    "array_length",
    "array_position",
    "array_remove",
    "array_to_string",
    "avg",
    "bit_and",
    "bit_or",
    "bool_and",
    "bool_or",
    "btrim",
    "cardinality",
    "ceil",
    "ceiling",
    "char_length",
    "coalesce",
    "concat",
    "concat_ws",
    "count",
    "date_part",
    "date_trunc",
    "every",
    "exp",
    "extract",
    "floor",
    "format",
    "greatest",
    "initcap",
    "jsonb_agg",
    "jsonb_array_elements",
    "jsonb_array_length",
    "jsonb_build_array",
    "jsonb_build_object",
    "jsonb_each",
    "jsonb_extract_path",
    "jsonb_extract_path_text",
    "jsonb_object_agg",
    "jsonb_object_keys",
    "jsonb_path_exists",
    "jsonb_path_query",
    "jsonb_set",
    "jsonb_strip_nulls",
    "jsonb_typeof",
    "json_agg",
    "json_build_array",
    "json_build_object",
    "json_object_agg",
    "least",
    "left",
    "length",
    "ln",
    "log",
    "lower",
    "lpad",
    "ltrim",
    "max",
    "md5",
    "min",
    "mod",
    "nullif",
    "octet_length",
    "position",
    "power",
    "regexp_match",
    "regexp_matches",
    "regexp_replace",
    "regexp_split_to_array",
    "repeat",
    "replace",
    "reverse",
    "right",
    "round",
    "row_number",
    "rank",
    "dense_rank",
    "rpad",
    "rtrim",
    "sign",
    "split_part",
    "sqrt",
    "starts_with",
    "string_agg",
    "string_to_array",
    "strpos",
    "substr",
    "substring",
    "sum",
    "to_char",
    "to_date",
    "to_json",
    "to_jsonb",
    "to_number",
    "to_timestamp",
    "to_tsquery",
    "to_tsvector",
    "plainto_tsquery",
    "websearch_to_tsquery",
    "ts_rank",
    "ts_rank_cd",
    "ts_headline",
    "translate",
    "trim",
    "trunc",
    "unnest",
    "upper",
    "generate_series",
    "lag",
    "lead",
    "first_value",
    "last_value",
    "percentile_cont",
    "percentile_disc",
    "stddev",
    "variance",
    "similarity",
    "word_similarity",
    "cosine_distance",
    "l2_distance",
    "inner_product",
    "l1_distance",
    "vector_dims",
    "vector_norm",
    "l2_normalize",
    "subvector",
    "current_user",
    "session_user",
    "current_schema",
    "current_database",
    "current_setting",
    "encode",
    "decode",
    "sha256",
];

/// Functions whose result changes between calls or transactions: they mark a statement as
/// volatile (never cached). None of them changes a table.
pub const VOLATILE: &[&str] = &[
    "now",
    "random",
    "nextval",
    "setval",
    "currval",
    "lastval",
    "clock_timestamp",
    "statement_timestamp",
    "transaction_timestamp",
    "timeofday",
    "gen_random_uuid",
    "uuid_generate_v1",
    "uuid_generate_v4",
    "txid_current",
    "pg_current_xact_id",
    "pg_sleep",
    "pg_advisory_lock",
    "pg_try_advisory_lock",
    "set_config",
    "setseed",
    "current_timestamp",
    "localtimestamp",
];

/// Other built-ins that change no table.
const NO_WRITE: &[&str] = &[
    "version",
    "has_table_privilege",
    "has_schema_privilege",
    "has_database_privilege",
    "quote_ident",
    "quote_literal",
    "format_type",
    "to_regclass",
    "obj_description",
    "col_description",
    "age",
    "make_interval",
];

/// Every function is a known stable built-in.
pub fn all_stable(functions: &[String]) -> bool {
    functions.iter().all(|f| STABLE.contains(&f.as_str()))
}

/// Every function is a built-in that writes no table.
pub fn none_write(functions: &[String]) -> bool {
    functions.iter().all(|f| {
        let f = f.as_str();
        STABLE.contains(&f) || VOLATILE.contains(&f) || NO_WRITE.contains(&f) || is_catalog_function(f)
    })
}

/// `pg_backend_pid`, `pg_advisory_lock`, `pg_stat_*`...: catalog functions change no user table.
fn is_catalog_function(f: &str) -> bool {
    f.starts_with("pg_")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn classification() {
        assert!(all_stable(&v(&["count", "lower"])));
        assert!(!all_stable(&v(&["count", "now"])));
        assert!(none_write(&v(&["now", "pg_backend_pid", "count"])));
        assert!(!none_write(&v(&["create_work_item"])));
        assert!(all_stable(&[]) && none_write(&[]));
    }
}
