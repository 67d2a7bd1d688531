//! The names of PostgreSQL's built-in functions (and pgvector's), as a set: a statement calling
//! any other function may run user code, which can change settings pgpilot cannot read back.
//! The list is data, not a guess: it was read from a PostgreSQL 16 + pgvector catalog with
//! `SELECT DISTINCT proname FROM pg_proc WHERE oid < 16384 OR <member of extension vector>`
//! (without set_config, handled by name). A built-in of a newer server missing here only costs a
//! pinned client, never a leak.

use std::collections::HashSet;
use std::sync::OnceLock;

const LIST: &str = include_str!("builtin_functions.txt");

fn set() -> &'static HashSet<&'static str> {
    static SET: OnceLock<HashSet<&'static str>> = OnceLock::new();
    SET.get_or_init(|| LIST.lines().filter(|l| !l.is_empty() && !l.starts_with('#')).collect())
}

/// `name` (as the parser resolved it: unquoted names folded to lower case) is a built-in.
pub fn is_builtin(name: &str) -> bool {
    set().contains(name)
}

#[cfg(test)]
mod tests {
    #[test]
    fn builtins_and_others() {
        assert!(super::is_builtin("lower") && super::is_builtin("cosine_distance"));
        assert!(super::is_builtin("current_setting") && super::is_builtin("pg_advisory_unlock_all"));
        assert!(!super::is_builtin("set_config") && !super::is_builtin("my_func") && !super::is_builtin("Lower"));
    }
}
