//! Whether a semicolon ends a statement. PostgreSQL's grammar reads two places where it does not:
//! inside parentheses (a rule's action list, `CREATE RULE r AS ON INSERT TO t DO ALSO (INSERT
//! ..; UPDATE ..)`) and inside a routine body in the SQL-standard form (`CREATE FUNCTION f()
//! RETURNS int LANGUAGE sql BEGIN ATOMIC ..; ..; END`). Split there, one statement became
//! several: insights counted fragments (an `end` among them) as statements and attributed the
//! server's single CommandComplete to the first. The token pass has no grammar, so for the
//! second it follows the rule psql's own splitter uses, tightened: in a statement that starts
//! `CREATE [OR REPLACE] FUNCTION|PROCEDURE`, outside parentheses, `begin atomic` opens the body,
//! `case` opens a block inside it (it also ends with `end`), `end` closes one; a word after `.`
//! or `as` is a name, not a keyword (a quoted name or a literal there is the name itself). A
//! name can still fool it (a column called `end` without `as`), and a piece it joins wrongly is
//! found by the parser (`parse::joined`) and analysed as writing anything. It depends on tokens
//! only, never on literal values, so texts that differ in literals still split alike (`rematch`
//! relies on it).

/// The nesting of the statement being read.
#[derive(Debug, Default)]
pub(crate) struct Nesting {
    parens: u32,
    blocks: u32,
    /// Its head so far.
    head: Head,
    /// The last token was `begin` (a body opens if `atomic` follows).
    after_begin: bool,
    /// The next word is a name: it follows `.` or `as`.
    name_next: bool,
}

/// How a statement starts, as far as routine bodies are concerned.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Head {
    /// No word read yet.
    #[default]
    Start,
    Create,
    CreateOr,
    CreateOrReplace,
    /// `create [or replace] function|procedure`: its body may hold semicolons.
    Routine,
    /// Anything else (most statements): no body to follow.
    Other,
}

impl Nesting {
    /// A semicolon here ends the statement.
    #[inline]
    pub fn at_top(&self) -> bool {
        self.parens == 0 && self.blocks == 0
    }

    #[inline]
    pub fn punct(&mut self, c: u8) {
        self.after_begin = false;
        self.name_next = c == b'.';
        match c {
            b'(' => self.parens = self.parens.saturating_add(1),
            b')' => self.parens = self.parens.saturating_sub(1),
            _ => {}
        }
    }

    /// An identifier or keyword, lower-cased.
    #[inline]
    pub fn ident(&mut self, word: &[u8]) {
        if self.head == Head::Other {
            return; // (most statements: one test per word)
        }
        if self.head != Head::Routine {
            self.head = match (self.head, word) {
                (Head::Start, b"create") => Head::Create,
                (Head::Create, b"or") => Head::CreateOr,
                (Head::CreateOr, b"replace") => Head::CreateOrReplace,
                (Head::Create | Head::CreateOrReplace, b"function" | b"procedure") => Head::Routine,
                _ => Head::Other,
            };
            return;
        }
        let (after_begin, name) = (std::mem::take(&mut self.after_begin), std::mem::take(&mut self.name_next));
        if self.parens > 0 || name {
            return;
        }
        match word {
            b"begin" if self.blocks == 0 => self.after_begin = true,
            b"atomic" if after_begin => self.blocks = 1,
            b"case" if self.blocks > 0 => self.blocks = self.blocks.saturating_add(1),
            b"end" => self.blocks = self.blocks.saturating_sub(1),
            b"as" => self.name_next = true,
            _ => {}
        }
    }

    /// Any other token (a literal, a quoted name, a `;` inside a body): what follows it is
    /// neither `atomic` after `begin` nor the name after `.` or `as`.
    #[inline]
    pub fn other(&mut self) {
        self.after_begin = false;
        self.name_next = false;
    }

    /// The statement ended: the next one starts at the top.
    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use crate::sql::tokens::shapes;

    fn texts(sql: &str) -> Vec<String> {
        shapes(sql).into_iter().map(|s| s.text).collect()
    }

    #[test]
    fn a_standard_routine_body_is_one_statement() {
        let sql = "CREATE OR REPLACE FUNCTION f(a int) RETURNS int LANGUAGE sql BEGIN ATOMIC \
                   SELECT CASE WHEN a > 0 THEN 1 ELSE 2 END; SELECT a; END; SELECT 3";
        let got = shapes(sql);
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].text.starts_with("create or replace function f") && got[0].text.ends_with("select a ; end"));
        assert_eq!(&sql[got[0].start..got[0].end], &sql[..sql.find("; SELECT 3").unwrap()]);
        assert_eq!(got[1].text, "select ?");
        let p = texts("CREATE PROCEDURE p() BEGIN ATOMIC INSERT INTO t VALUES (1); INSERT INTO t VALUES (2); END;");
        assert_eq!(p.len(), 1, "{p:?}");
    }

    #[test]
    fn a_rule_action_list_is_one_statement() {
        let got =
            texts("CREATE RULE r AS ON INSERT TO t DO ALSO (INSERT INTO a VALUES (1); UPDATE b SET x = 1); SELECT 1");
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].ends_with("update b set x = ? )"), "{got:?}");
    }

    #[test]
    fn a_piece_of_several_statements_is_analysed_as_writing_anything() {
        use crate::sql::{CacheEffect, StatementKind, WriteScope};
        // What a wrongly joined piece would be: two statements to the grammar.
        let sql = "UPDATE t SET v = 0 WHERE id = 1; SELECT 1";
        let a = crate::sql::parse::analyze(sql, "update t set v = ? where id = ? ; select ?");
        assert_eq!((a.kind, a.writes, a.cache_effect), (StatementKind::Ddl, WriteScope::Unknown, CacheEffect::Session));
        assert!(a.keyed.is_none(), "no row-level key for a piece of several statements");
        // A rule's action list is one statement, and DDL.
        let rule = "CREATE RULE r AS ON INSERT TO t DO ALSO (INSERT INTO a VALUES (1); UPDATE b SET x = 1)";
        let a = crate::sql::parse::analyze(rule, &texts(rule)[0]);
        assert_eq!((a.kind, a.cache_effect), (StatementKind::Ddl, CacheEffect::None));
    }

    #[test]
    fn other_statements_split_as_before() {
        // `begin`/`end` outside a routine's head are transaction control; parentheses close.
        assert_eq!(texts("BEGIN; SELECT (1); END; COMMIT").len(), 4);
        assert_eq!(texts("SELECT CASE WHEN true THEN 1 END; SELECT 2").len(), 2);
        assert_eq!(texts("CREATE FUNCTION f(begin int) RETURNS int LANGUAGE sql RETURN 1; SELECT 1").len(), 2);
        assert_eq!(
            texts("CREATE FUNCTION f() RETURNS int LANGUAGE sql RETURN CASE WHEN true THEN 1 END; SELECT 1").len(),
            2
        );
        // `begin` as a name opens nothing: what follows is split as the server splits it.
        assert_eq!(
            texts("CREATE FUNCTION pg_temp.begin() RETURNS int LANGUAGE sql AS 'SELECT 1'; COMMIT; UPDATE t SET v = 0")
                .len(),
            3
        );
        // Names after `.` and `as` inside a body do not close it.
        let body =
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT t.end AS end FROM t; END; SELECT 2";
        assert_eq!(texts(body).len(), 2, "{:?}", texts(body));
        // A quoted name is the name: the next word is read again.
        for body in [
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1 AS \"x\"; END; SELECT 2",
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT a FROM t ORDER BY t.\"Id\"; END; SELECT 2",
        ] {
            assert_eq!(texts(body).len(), 2, "{:?}", texts(body));
        }
        let quoted =
            texts("CREATE FUNCTION f() RETURNS SETOF s.\"T\" LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT 2; END");
        assert_eq!(quoted.len(), 1, "{quoted:?}");
        // A routine body in quotes holds no tokens; an unbalanced `)` does not nest negatively.
        assert_eq!(texts("CREATE FUNCTION f() RETURNS int AS $$ begin; $$ LANGUAGE sql; SELECT 1").len(), 2);
        assert_eq!(texts("SELECT 1); SELECT 2").len(), 2);
    }
}
