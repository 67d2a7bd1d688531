//! Whether a PL/pgSQL trigger function's body (`pg_proc.prosrc`) can change the session: an
//! `updated_at` trigger (`NEW.updated_at := now(); RETURN NEW;`) cannot, and a table whose only
//! triggers are such needs no reset after each write (session isolation). Read with PostgreSQL's
//! own lexer (libpg_query's scanner): strings, dollar quotes and comments are single tokens, so
//! no text hides a word or a call. An allowlist, not a list of what is dangerous: every keyword
//! must be one of a few that build expressions, assignments and IF/CASE (no statement that may
//! change state, reach another relation or run text: `SELECT`, `SET`, `EXECUTE`, `INSERT`,
//! `REFRESH`, `TREAT`...), and every call one of a few pure built-ins. A name may still mean a
//! user function (a namesake of an allowed call, `NEW.f` calling `f(row)`): the words are
//! returned and the caller checks them against the database's functions.

use pg_query::protobuf::{KeywordKind, ScanToken, Token};

/// Keywords of expressions, assignments, IF/CASE/loops over ranges, RAISE and declarations.
const ALLOWED_KEYWORDS: [&str; 64] = [
    "begin",
    "end",
    "new",
    "old",
    "declare",
    "constant",
    "default",
    "if",
    "then",
    "else",
    "elsif",
    "elseif",
    "case",
    "when",
    "return",
    "while",
    "for",
    "in",
    "exit",
    "continue",
    "null",
    "true",
    "false",
    "and",
    "or",
    "not",
    "is",
    "isnull",
    "notnull",
    "distinct",
    "like",
    "ilike",
    "similar",
    "escape",
    "between",
    "at",
    "time",
    "zone",
    "with",
    "without",
    "timestamp",
    "interval",
    "cast",
    "as",
    "coalesce",
    "nullif",
    "greatest",
    "least",
    "current_timestamp",
    "current_date",
    "current_time",
    "localtime",
    "localtimestamp",
    "integer",
    "int",
    "smallint",
    "bigint",
    "boolean",
    "numeric",
    "decimal",
    "varchar",
    "character",
    "varying",
    "using",
];

/// Built-ins a body may call: pure functions of their arguments and the clock (no relation read
/// by name, no setting, no sequence, no other backend).
const ALLOWED_CALLS: [&str; 40] = [
    "now",
    "clock_timestamp",
    "statement_timestamp",
    "transaction_timestamp",
    "lower",
    "upper",
    "length",
    "char_length",
    "btrim",
    "ltrim",
    "rtrim",
    "substr",
    "replace",
    "concat",
    "concat_ws",
    "md5",
    "split_part",
    "regexp_replace",
    "to_char",
    "to_timestamp",
    "to_date",
    "date_trunc",
    "date_part",
    "abs",
    "round",
    "floor",
    "ceil",
    "gen_random_uuid",
    "jsonb_build_object",
    "jsonb_set",
    "to_jsonb",
    "jsonb_strip_nulls",
    "to_tsvector",
    "setweight",
    "array_to_string",
    "array_length",
    "cardinality",
    "age",
    "timezone",
    "format",
];

/// Words that build an expression around a parenthesis (`IF (..)`, `COALESCE(..)`), not calls.
/// `coalesce`, `nullif`, `greatest` and `least` are column-name keywords (no function can be so
/// called); the others could name a user function on some server version, and are among the
/// words the caller checks against the database's functions like any other.
const CONSTRUCTS: [&str; 14] = [
    "if", "elsif", "elseif", "while", "return", "when", "and", "or", "not", "in", "coalesce", "nullif", "greatest",
    "least",
];

/// The words of `body` (names and keywords as the server reads them, fields too: `NEW.f` may
/// call `f(row)`) when it can change nothing of the session unless one of them names a function
/// of the database (the caller's check); None when in doubt.
pub fn harmless_words(body: &str) -> Option<Vec<String>> {
    // With standard_conforming_strings off (a function's SET, a client's SET LOCAL before it
    // is first compiled) a backslash would end a string the lexer here reads as going on.
    if body.contains('\\') {
        return None;
    }
    let scanned = pg_query::scan(body).ok()?;
    let comment = |k: &&ScanToken| k.token == Token::SqlComment as i32 || k.token == Token::CComment as i32;
    let tokens: Vec<&ScanToken> = scanned.tokens.iter().filter(|k| !comment(k)).collect();
    let text = |i: usize| body.get(tokens[i].start as usize..tokens[i].end as usize).unwrap_or("");
    let is = |i: usize, t: Token| tokens.get(i).is_some_and(|k| k.token == t as i32);
    let mut words = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        let keyword = token.keyword_kind != KeywordKind::NoKeyword as i32;
        if is(i, Token::Uident) || is(i, Token::Usconst) {
            return None;
        }
        let name = if is(i, Token::Ident) { unquote(text(i)) } else { text(i).to_ascii_lowercase() };
        if !name.is_ascii() {
            return None; // a single-byte encoding's server folds letters past ASCII as well
        }
        let field = i >= 1 && is(i - 1, Token::Ascii46); // `NEW.role`: a column (or a function)
                                                         // A name the server cuts to 63 bytes would not match the catalog's; a field may be a
                                                         // built-in called on the value before it (`(4711::bigint).pg_advisory_lock`).
        if name.len() > 63 || (field && !harmless_as_field(&name)) {
            return None;
        }
        let distinct_from = name == "from" && i >= 1 && text(i - 1).eq_ignore_ascii_case("distinct");
        if keyword && !field && !distinct_from && !ALLOWED_KEYWORDS.contains(&name.as_str()) {
            return None;
        }
        // `name(`: a construct or an allowed built-in (plain or `pg_catalog.name(`; a namesake
        // in another schema is the caller's word check).
        let named = keyword || is(i, Token::Ident);
        if named
            && is(i + 1, Token::Ascii40)
            && !(CONSTRUCTS.contains(&name.as_str()) || ALLOWED_CALLS.contains(&name.as_str()))
        {
            return None;
        }
        if named {
            words.push(name);
        }
    }
    Some(words)
}

/// Built-ins whose names are common column names, harmless as a call on one value (type
/// conversions; `version` takes none).
const FIELD_NAMES: [&str; 20] = [
    "name",
    "text",
    "date",
    "time",
    "timestamp",
    "timestamptz",
    "numeric",
    "int2",
    "int4",
    "int8",
    "float4",
    "float8",
    "bool",
    "varchar",
    "bpchar",
    "interval",
    "json",
    "jsonb",
    "uuid",
    "version",
];

/// A field name that, as a call of a built-in on the value before the dot, is an allowed call or
/// a harmless conversion: any other built-in might do anything (`brin_summarize_new_values` runs
/// index expressions); a name of no built-in is a column or a function of the database (the
/// caller's word check).
fn harmless_as_field(name: &str) -> bool {
    !super::builtins::is_builtin(name) || ALLOWED_CALLS.contains(&name) || FIELD_NAMES.contains(&name)
}

/// An identifier as the server reads it: a quoted one as written, any other folded to lower case.
fn unquote(ident: &str) -> String {
    match ident.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        Some(inner) => inner.replace("\"\"", "\""),
        None => ident.to_ascii_lowercase(),
    }
}

#[cfg(test)]
#[path = "function_body_tests.rs"]
mod tests;
