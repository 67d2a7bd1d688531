//! The token pass's unit tests (a child module of `tokens`).

use super::shapes;

fn one(sql: &str) -> String {
    let s = shapes(sql);
    assert_eq!(s.len(), 1, "{s:?}");
    s[0].text.clone()
}

/// Statements PostgreSQL runs that a misread string, number or comment would hide inside
/// another statement's shape (each text is two statements to the server).
#[test]
fn no_statement_hides_in_a_misread_token() {
    for text in [
        "SELECT 1 -- note\r; SET app.tenant TO evil",
        "SELECT E'x'\n'\\'' ; SET app.tenant TO evil -- '",
        "SELECT E'x' -- c\n  '\\'' ; SET app.tenant TO evil -- '",
        "SELECT e'x'\r\n\t'\\'' ; SET app.tenant TO evil -- '",
        "SELECT 0x1e--'\n; SET app.tenant TO evil --'",
    ] {
        let found: Vec<String> = super::shapes(text).into_iter().map(|s| s.text).collect();
        assert_eq!(found.len(), 2, "{text:?} -> {found:?}");
        assert!(found[1].starts_with("set app"), "{text:?} -> {found:?}");
    }
    // Without a newline between them the parts are separate strings (no continuation).
    assert_eq!(super::shapes("SELECT E'x' '\\'' ; SELECT 2 -- '").len(), 1);
    assert_eq!(super::shapes("SELECT 1e-5, 2").len(), 1);
}

#[test]
fn literals_comments_and_case_fold_away() {
    let a = one("SELECT * FROM t WHERE id = 42 AND name = 'x''y' -- note\n");
    let b = one("select *  from t /* other */ where id=7 and name=E'z'");
    assert_eq!(a, "select * from t where id = ? and name = ?");
    assert_eq!(b, "select * from t where id = ? and name = ?");
    assert_eq!(one("SELECT 1.5e-3, $1, $$body$$, x'ff'"), "select ? , $1 , ? , ?");
    assert_eq!(one("SELECT \"Mixed\" FROM t1"), "select \"Mixed\" from t1");
}

#[test]
fn backslashes_escape_only_where_postgresql_says() {
    let attack = "SELECT v FROM kv WHERE k::text = '\\' UNION ALL SELECT v FROM kv2 WHERE k = 'x'";
    assert_eq!(one(attack), "select v from kv where k : : text = ? union all select v from kv2 where k = ?");
    assert_eq!(one("SELECT E'a\\'b', 'c'"), "select ? , ?");
    assert_eq!(super::shapes_with("SELECT 'a\\'b', 'c'", true)[0].text, "select ? , ?");
    assert_eq!(one("SELECT x'ff', n'a', b'01'"), "select ? , ? , ?");
    assert_eq!(one("SET x TO'a'"), "set x to ?");
}

/// Texts with one shape must be one statement to PostgreSQL: equal shapes imply equal
/// fingerprints from libpg_query (the server's own lexer and grammar) over tricky texts.
#[test]
fn equal_shapes_are_equal_statements_to_the_parser() {
    let texts = [
        "SELECT v FROM kv WHERE k = '\\' UNION ALL SELECT v FROM kv2 WHERE k = 'x'",
        "SELECT v FROM kv WHERE k = 'a' UNION ALL SELECT v FROM kv2 WHERE k = 'x'",
        "SELECT v FROM kv WHERE k = E'\\\\' UNION ALL SELECT v FROM kv2 WHERE k = ''",
        "SELECT v FROM kv WHERE k = E'\\'' UNION ALL SELECT v FROM kv2 WHERE k = ''",
        "SELECT 'a' /* nested /* comment */ still */ FROM t",
        "SELECT 'a' FROM t",
        "SELECT $a$ it's $a$, 1 FROM t",
        "SELECT $$x$$, 1 FROM t",
        "SELECT \"a\"\"b\" FROM t",
        "SELECT \"a\" FROM t",
        "SELECT U&'d\\0061t' FROM t",
        "SELECT U&'x' FROM t",
        "SELECT 1 -- ' comment\n, 2 FROM t",
        "SELECT 1 -- comment\r, 2 FROM t",
        "SELECT 1",
        "SELECT 1, 2 FROM t",
        "SELECT e'\\\\' , 'b''c' FROM t",
        "SELECT 'x', 'y' FROM t",
        "SELECT $é$ -- x $é$ FROM t",
        "SELECT $é$ -- $é$, set_config('a', 'b', false) FROM t",
    ];
    for a in texts {
        for b in texts {
            let (sa, sb) = (super::shapes(a), super::shapes(b));
            if sa.iter().map(|s| &s.text).eq(sb.iter().map(|s| &s.text)) {
                let fa = pg_query::fingerprint(a, 0, pg_query::FingerprintOptions::FULL_RELNAME).unwrap().value;
                let fb = pg_query::fingerprint(b, 0, pg_query::FingerprintOptions::FULL_RELNAME).unwrap().value;
                assert_eq!(fa, fb, "one shape, two statements:\n{a}\n{b}");
            }
        }
    }
}

/// U+00A0 (and every byte >= 0x80) is an identifier character to PostgreSQL's lexer: `t\u{a0}`
/// is another table than `t`, so another shape (the tokenizer once trimmed Unicode
/// whitespace off a statement's ends and gave both one analysis).
#[test]
fn non_ascii_characters_at_the_ends_stay_in_the_shape() {
    assert_eq!(one("DELETE FROM t\u{a0}"), "delete from t\u{a0}");
    assert_ne!(one("DELETE FROM t\u{a0}"), one("DELETE FROM t"));
}

#[test]
fn statements_split_at_top_level_semicolons() {
    let s = shapes("BEGIN; SELECT ';'; COMMIT;;");
    let texts: Vec<_> = s.iter().map(|x| x.text.as_str()).collect();
    assert_eq!(texts, ["begin", "select ?", "commit"]);
    let sql = "BEGIN; SELECT ';'; COMMIT;;";
    assert_eq!(&sql[s[1].start..s[1].end], " SELECT ';'");
}
