//! The catalog's answers about one database's tables, as `relations` loads them: one record per
//! name, so that a commit asks one lookup per table whatever it needs to know (trigger, view,
//! foreign-key actions, inheritance, primary key), and what needs a walk of the foreign-key graph
//! (a path back to the table itself) is found once per load, not at every write.

use foldhash::{HashMap, HashSet};
use std::sync::Arc;

use super::scopes;

/// What the catalog says about one name: every question a write or a read asks of a table is
/// answered by one lookup (a tpcb-like commit asks several per table).
#[derive(Default)]
pub(super) struct Facts {
    /// An ordinary or partitioned table (only their reads are cached).
    pub(super) ordinary: bool,
    /// A view or the like of this name in some schema: its reads are never cached, and a write
    /// through it writes a base table pgpilot does not know.
    pub(super) other: bool,
    /// Under a row-level security policy that reads another table or calls a user function: a
    /// write there changes what a cached read of this table may show without touching it, so its
    /// reads are never cached (policies that read only the table itself, the user and settings
    /// are covered by the key and the table's own invalidation).
    pub(super) policy_reads_others: bool,
    /// User triggers or rules: a write may change any table.
    pub(super) triggers: bool,
    /// A read runs code that may change the session (`Relations::runs_attached_code`): a view's
    /// query, a policy, a column type's functions, or that of a relation the view or a policy
    /// reads.
    pub(super) code_on_read: bool,
    /// A write does: all of those (a write through a view runs its query, a policy applies to
    /// writes), triggers, rules, defaults, constraints, index and partition key expressions,
    /// domain checks, and the code of what the write reaches (foreign-key actions, partitions,
    /// a view's base).
    pub(super) code_on_write: bool,
    /// A view: the relations its query reads (for the code flags).
    pub(super) reads: Vec<Arc<str>>,
    /// The relations its policies read: their read code runs on this table's reads and writes
    /// (their write code does not).
    pub(super) policy_reads: Vec<Arc<str>>,
    /// Parent or child of inheritance or partitioning: never keyed.
    pub(super) inherited: bool,
    /// Tables whose rows a write here changes through a foreign-key action; parent <-> child for
    /// partitions and inheritance.
    pub(super) cascades: Vec<Arc<str>>,
    /// The same for foreign keys with an ON UPDATE action only (an UPDATE can fire no other).
    pub(super) update_cascades: Vec<Arc<str>>,
    /// An ordinary table's one-column primary key of a type `scopes` can compare, without
    /// row-level security and with no same-named relation in another schema: column and type.
    pub(super) key: Option<(Arc<str>, scopes::Family)>,
    /// A foreign-key path from the table back to itself through `cascades`: a DELETE of known
    /// keys changes rows of other keys. Found once per load.
    pub(super) loops_on_delete: bool,
    /// The same through `update_cascades`, for an UPDATE.
    pub(super) loops_on_update: bool,
}

/// A name the catalog does not list.
static UNLISTED: Facts = Facts {
    ordinary: false,
    other: false,
    policy_reads_others: false,
    triggers: false,
    code_on_read: false,
    code_on_write: false,
    reads: Vec::new(),
    policy_reads: Vec::new(),
    inherited: false,
    cascades: Vec::new(),
    update_cascades: Vec::new(),
    key: None,
    loops_on_delete: false,
    loops_on_update: false,
};

#[derive(Default)]
pub(super) struct Known {
    pub(super) tables: HashMap<Box<str>, Facts>,
    /// A hash of each table's columns, types, ACLs and policies (and, under "", of role
    /// memberships and attributes): a change made outside pgpilot (DDL, GRANT, REVOKE, a policy)
    /// is found by comparing one load with the next, and invalidates what it may have changed.
    pub(super) shapes: HashMap<Box<str>, Box<str>>,
    /// The database's (and loading role's) default isolation takes a snapshot per transaction:
    /// reads inside transaction blocks neither use nor fill the cache.
    pub(super) snapshot_default: bool,
    /// Some relation runs code on a read or a write, or expressions may: without one, no
    /// statement needs a look.
    pub(super) any_code: bool,
    /// A user-made operator, cast or domain check runs code that may change the session, or a user
    /// function is named as a built-in (`expression_code_rows`): any statement may call it from
    /// its own text, so every one counts as running code.
    pub(super) code_in_expressions: bool,
    /// While a load is read: trigger bodies read as harmless (table, words) and the names of the
    /// database's functions (`check_bodies`).
    bodies: Vec<(Box<str>, Vec<String>)>,
    function_names: HashSet<Box<str>>,
    pub(super) loaded_ms: u64,
    pub(super) loading: bool,
    pub(super) stale: bool,
    /// `Relations::mark_stale` calls, and their count when the load in progress began.
    pub(super) marks: u64,
    pub(super) marks_at_load: u64,
    /// When the last load failed (0: it did not): the next waits `RETRY_AFTER_MS`, where every
    /// statement once started another (each failing the same way, each closing its connection).
    pub(super) failed_ms: u64,
}

/// How long after a failed load the next may start.
const RETRY_AFTER_MS: u64 = 5_000;

impl Known {
    /// Whether a (re)load should start: none under way, none failed lately, and the list stale
    /// or older than `refresh_ms`.
    pub(super) fn due(&self, now_ms: u64, refresh_ms: u64) -> bool {
        let resting = self.failed_ms > 0 && now_ms < self.failed_ms + RETRY_AFTER_MS;
        !self.loading && !resting && (self.stale || now_ms.saturating_sub(self.loaded_ms) >= refresh_ms)
    }

    pub(super) fn facts(&self, name: &str) -> &Facts {
        self.tables.get(name).unwrap_or(&UNLISTED)
    }

    fn facts_mut(&mut self, name: String) -> &mut Facts {
        self.tables.entry(name.into_boxed_str()).or_default()
    }

    /// The facts of one load of `QUERY`'s rows, foreign-key loops included (built before the
    /// lock is taken: a large catalog's walk never holds up reads).
    pub(super) fn from_rows(rows: Vec<(String, String, String)>) -> Known {
        let mut k = Known::default();
        for (name, kind, target) in rows {
            k.note_row(name, &kind, target);
        }
        k.check_bodies();
        k.find_loops();
        k.spread_code();
        k
    }

    /// The code flags through views' reads (a read of a view reads its bases; a write through it
    /// writes them), policies' reads (their read code runs on the table's reads and writes),
    /// foreign-key actions and partitions (a write reaches them), to a fixed point.
    fn spread_code(&mut self) {
        loop {
            let reads_code = |ts: &[Arc<str>]| ts.iter().any(|t| self.facts(t).code_on_read);
            let on_read = |f: &Facts| !f.code_on_read && (reads_code(&f.reads) || reads_code(&f.policy_reads));
            let on_write = |f: &Facts| {
                let mut next = f.reads.iter().chain(&f.cascades).chain(&f.update_cascades);
                !f.code_on_write && (next.any(|t| self.facts(t).code_on_write) || reads_code(&f.policy_reads))
            };
            let newly: Vec<(Box<str>, bool, bool)> = (self.tables.iter())
                .map(|(t, f)| (t, on_read(f), on_write(f)))
                .filter(|(_, r, w)| *r || *w)
                .map(|(t, r, w)| (t.clone(), r, w))
                .collect();
            if newly.is_empty() {
                break;
            }
            for (t, r, w) in newly {
                if let Some(f) = self.tables.get_mut(&t) {
                    f.code_on_read |= r;
                    f.code_on_write |= w;
                }
            }
        }
        self.any_code = self.code_in_expressions || self.tables.values().any(|f| f.code_on_read || f.code_on_write);
    }

    /// Records what a row says a touch of the relation runs or reaches: code flags, triggers,
    /// views' and policies' reads, foreign-key actions, partitions. False for another kind of row.
    fn note_reach(f: &mut Facts, kind: &str, target: String) -> bool {
        match kind {
            "code" => (f.code_on_read, f.code_on_write) = (true, true),
            "code_write" => f.code_on_write = true,
            "trigger" => (f.triggers, f.code_on_write) = (true, true),
            "reads" => f.reads.push(target.into()),
            "policy_reads" => f.policy_reads.push(target.into()),
            "cascade" => f.cascades.push(target.into()),
            "ucascade" => f.update_cascades.push(target.into()),
            "inherit" => {
                f.cascades.push(target.into());
                f.inherited = true;
            }
            _ => return false,
        }
        true
    }

    /// A PL/pgSQL trigger with no WHEN condition: its body read (`function_body`; an `updated_at`
    /// trigger changes nothing of the session, and its table's writes need no reset). Its words
    /// are checked against the database's functions once the load is read (`check_bodies`).
    fn note_trigger_body(&mut self, name: String, body: String) {
        let other = name.contains(scopes::SEP);
        let f = self.facts_mut(name.clone());
        (f.triggers, f.other) = (true, f.other || other);
        match crate::sql::function_body::harmless_words(&body) {
            Some(words) => self.bodies.push((name.into_boxed_str(), words)),
            None => f.code_on_write = true,
        }
    }

    /// A harmless-looking body naming a function of the database (a namesake of an allowed
    /// built-in, `NEW.f` calling `f(row)`) runs it: its table runs code on writes.
    fn check_bodies(&mut self) {
        for (table, words) in std::mem::take(&mut self.bodies) {
            if words.iter().any(|w| self.function_names.contains(w.as_str())) {
                self.facts_mut(table.into()).code_on_write = true;
            }
        }
        self.function_names = HashSet::default();
    }

    /// Stores one row of `QUERY`.
    fn note_row(&mut self, name: String, kind: &str, target: String) {
        match kind {
            // A user function named as a built-in is called by a text that trusts the name.
            "user_function" => return self.code_in_expressions |= crate::sql::builtins::is_builtin(&name),
            "function_name" => {
                self.function_names.insert(name.into_boxed_str());
                return;
            }
            "trigger_body" => return self.note_trigger_body(name, target),
            _ => {}
        }
        if name.contains(scopes::SEP) {
            // Its generation scopes could be another table's (`scopes`): never cached, and a
            // write that reaches it invalidates the whole database, as one through a view does.
            // (What it runs and reaches still counts: a name is no way around session isolation.)
            let f = self.facts_mut(name);
            f.other = true;
            Self::note_reach(f, kind, target);
            return;
        }
        match kind {
            "r" | "p" => self.facts_mut(name).ordinary = true,
            "policy" => self.facts_mut(name).policy_reads_others = true,
            "shape" | "roles" => drop(self.shapes.insert(name.into(), target.into())),
            _ if kind.starts_with("pkey:") => {
                if let Some(f) = kind[5..].parse().ok().and_then(scopes::Family::of) {
                    self.facts_mut(name).key = Some((target.into(), f));
                }
            }
            "isolation" => self.snapshot_default = !name.starts_with("read "),
            "expr_code" => self.code_in_expressions = true,
            _ => {
                let f = self.facts_mut(name);
                if !Self::note_reach(f, kind, target) {
                    f.other = true;
                }
            }
        }
    }

    /// Which keyed tables a foreign-key path leads back to (`Facts::loops_on_*`).
    fn find_loops(&mut self) {
        let loops: Vec<(Box<str>, bool, bool)> = (self.tables.iter())
            .filter(|(_, f)| f.key.is_some() && !(f.cascades.is_empty() && f.update_cascades.is_empty()))
            .map(|(t, _)| (t.clone(), self.leads_back(t, |f| &f.cascades), self.leads_back(t, |f| &f.update_cascades)))
            .collect();
        for (t, on_delete, on_update) in loops {
            if let Some(f) = self.tables.get_mut(&t) {
                (f.loops_on_delete, f.loops_on_update) = (on_delete, on_update);
            }
        }
    }

    /// Whether `edges` lead from `table` back to it (each table visited once).
    fn leads_back(&self, table: &str, edges: fn(&Facts) -> &[Arc<str>]) -> bool {
        let mut seen: HashSet<&str> = HashSet::default();
        let mut todo: Vec<&str> = vec![table];
        while let Some(at) = todo.pop() {
            for next in edges(self.facts(at)) {
                if &**next == table {
                    return true;
                }
                if seen.insert(next) {
                    todo.push(next);
                }
            }
        }
        false
    }
}
