//! Table names shared by every analysis: each names a table with the same `Arc`, so what compares
//! tables at every statement (a session's table views, a transaction's list of writes) compares
//! a pointer first, not bytes. A name is interned once per parse, not per run.

use std::sync::{Arc, LazyLock};

use foldhash::HashSet;
use parking_lot::Mutex;

/// Names kept; past it a name is not shared (comparisons still work, by bytes).
const MAX_NAMES: usize = 100_000;

static NAMES: LazyLock<Mutex<HashSet<Arc<str>>>> = LazyLock::new(Default::default);

/// The shared `Arc` of `name`.
pub fn intern(name: &str) -> Arc<str> {
    let mut names = NAMES.lock();
    if let Some(n) = names.get(name) {
        return n.clone();
    }
    let n: Arc<str> = Arc::from(name);
    if names.len() < MAX_NAMES {
        names.insert(n.clone());
    }
    n
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_name_one_arc() {
        let (a, b) = (super::intern("names_test_t"), super::intern(&String::from("names_test_t")));
        assert!(std::sync::Arc::ptr_eq(&a, &b));
        assert!(!std::sync::Arc::ptr_eq(&a, &super::intern("names_test_u")));
    }
}
