//! A shape's facts come from the shape: the analysis is kept per shape, so the first text of a
//! shape decides for all its texts, and no text's own spelling (a comment, a line break, a tab)
//! may change them.

use super::*;
use crate::sql::tokens::shapes;
use CacheEffect::{Session, Transaction};
use WriteScope::{Nothing, Unknown};

fn a(sql: &str) -> Analysis {
    analyze(sql, &shapes(sql)[0].text)
}

/// (statement, its facts, other spellings of it)
const CASES: [(&str, (CacheEffect, WriteScope), [&str; 3]); 6] = [
    (
        "SET LOCAL app.tenant = '1'",
        (Transaction, Nothing),
        ["/*x*/ SET LOCAL app.tenant = '2'", "SET\nLOCAL app.tenant = '3'", "-- c\n set local app.tenant='4'"],
    ),
    (
        "RESET app.tenant",
        (Transaction, Nothing),
        ["/* r */ RESET app.tenant", "reset\tapp.tenant", "RESET\napp.tenant"],
    ),
    (
        "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
        (Session, Nothing),
        [
            "/**/SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            "set\ntransaction isolation level serializable",
            "SET /*a*/ TRANSACTION ISOLATION LEVEL SERIALIZABLE",
        ],
    ),
    (
        "BEGIN ISOLATION LEVEL REPEATABLE READ",
        (Transaction, Nothing),
        [
            "/**/ BEGIN ISOLATION LEVEL REPEATABLE READ",
            "BEGIN ISOLATION LEVEL REPEATABLE\x0bREAD",
            "begin\nisolation level repeatable read",
        ],
    ),
    (
        "TRUNCATE a CASCADE",
        (CacheEffect::None, Unknown),
        ["/* t */ TRUNCATE a CASCADE", "truncate\na cascade", "TRUNCATE\ta\tCASCADE"],
    ),
    (
        "COMMIT PREPARED 'g'",
        (CacheEffect::None, Unknown),
        ["/* c */ COMMIT PREPARED 'g'", "commit\nprepared 'g'", "COMMIT\x0bPREPARED 'h'"],
    ),
];

#[test]
fn a_shape_s_cache_facts_do_not_depend_on_one_text_s_spelling() {
    for (plain, facts, others) in CASES {
        let p = a(plain);
        assert_eq!((p.cache_effect, p.writes), facts, "{plain}");
        for other in others {
            let o = a(other);
            assert_eq!((o.cache_effect, o.writes), facts, "{other:?} (as {plain:?})");
        }
    }
    assert_eq!(a("RESET ALL").cache_effect, Transaction);
    assert_eq!(a("SELECT 1 AS reset").cache_effect, CacheEffect::None);
}
