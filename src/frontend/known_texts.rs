//! The texts this session sent lately, each kept with what reading it found (its scan, its
//! statements' analyses): a text that is one of them with other literal values (`sql::rematch`)
//! skips the token pass, the shape hashing and the analysis lookups. A session mostly cycles
//! through a few statements, so the search starts at the slot that answered last and goes on from
//! there: a repeated statement is found at the first probe, the next one of a cycle at the second.
//! Sixteen slots: pgbench's TPC-B-like script sends seven statements as eleven texts (a negative
//! number is another shape: `+ -5` reads `+ - ?`). An exact repeat (drivers re-parse unnamed
//! statements) is the case of a text with no literals, or whose scan read a literal.

use std::sync::Arc;

use super::sql_scan::Scan;
use crate::sql::recent::LocalAnalyzer;
use crate::sql::rematch::{all_literals, rematch, shift};
use crate::sql::tokens::{params_hash, Literals, Shape};
use crate::sql::Analyzed;

const SLOTS: usize = 16;
/// Bytes of text kept per session, all slots together: the analysis cap's default, what the one
/// remembered Parse text this replaced could hold.
const BUDGET: usize = crate::sql::DEFAULT_MAX_ANALYZED;
/// Every this many reuses of a slot its analyses are looked up in the shared cache again (as
/// `sql::recent` does): the shared cache's eviction keeps seeing the shapes in use, and an analysis
/// it replaced is picked up.
const RECHECK: u8 = 64;

struct Known {
    text: Box<[u8]>,
    literals: Literals,
    /// Each statement's bounds in `text`, whitespace trimmed as `str::trim` does (the bytes its
    /// literal hash covers), and the shared analyzer's key for its shape. Where a literal is
    /// first or last the trim stops at it, so the same bounds, shifted, hold for a new text.
    statements: Vec<(usize, usize, u128)>,
    analyzed: Analyzed,
    /// Shared, not copied, with every reuse (a scan holds lists; most hold nothing).
    scan: Arc<Scan>,
    /// The scan read literal text (set_config's setting names): only the same bytes reuse it.
    exact_only: bool,
    backslash_quotes: bool,
    reuses: u8,
}

#[derive(Default)]
pub(super) struct KnownTexts {
    /// At most `SLOTS`, a ring in the order texts were first seen.
    slots: Vec<Known>,
    /// Where the next search starts: the slot that answered last.
    last: usize,
    /// Where the next remembered text goes.
    victim: usize,
    bytes: usize,
    /// A text was read before: the first is not kept (a connection per call that sends one text
    /// would pay for keeping it and never use it).
    read_one: bool,
}

impl KnownTexts {
    /// The earlier scan of `text` when it is a remembered text with other literal values; its
    /// statements' analyses (with this text's literal hashes) go to `analyzed`, and its literals
    /// to `literals` when it is one statement. (Written in place: a reading is large to move.)
    pub(super) fn find(
        &mut self,
        text: &[u8],
        backslash_quotes: bool,
        analyzer: &LocalAnalyzer,
        out: (&mut Analyzed, &mut Literals),
    ) -> Option<Arc<Scan>> {
        let n = self.slots.len();
        for step in 0..n {
            let at = if self.last + step < n { self.last + step } else { self.last + step - n };
            let k = &mut self.slots[at];
            if k.backslash_quotes != backslash_quotes {
                continue;
            }
            if let Some((literals, exact)) = k.matches(text) {
                self.last = at;
                return Some(k.reuse(text, (literals, exact), analyzer, out));
            }
        }
        None
    }

    /// Keeps a text just read, when it fits the budget and its literals can all be kept.
    pub(super) fn remember(
        &mut self,
        text: &str,
        shapes: &[Shape],
        read: (&Analyzed, &Arc<Scan>),
        backslash_quotes: bool,
        analyzer: &LocalAnalyzer,
    ) {
        if !std::mem::replace(&mut self.read_one, true) {
            return;
        }
        let (analyzed, scan) = read;
        let Some(literals) = all_literals(shapes) else { return };
        if text.len() > BUDGET || text.len() > usize::from(u16::MAX) || shapes.len() != analyzed.len() {
            return;
        }
        let statements: Vec<_> =
            shapes.iter().map(|s| trimmed(text, s.start, s.end, analyzer.shared().key(s))).collect();
        // A trimmed bound inside a literal (an unterminated string ending in spaces) would not
        // move with it.
        let inside =
            |pos: usize| (0..literals.count()).filter_map(|k| literals.get(k)).any(|l| l.start < pos && pos < l.end);
        if statements.iter().any(|&(start, end, _)| inside(start) || inside(end)) {
            return;
        }
        let known = Known {
            text: text.as_bytes().into(),
            literals,
            statements,
            analyzed: analyzed.clone(),
            scan: scan.clone(),
            exact_only: analyzed.iter().any(|(a, _)| a.session.set_config),
            backslash_quotes,
            reuses: 0,
        };
        // The oldest go first: `victim` is where the ring of texts, in the order first seen,
        // starts (slots fill from the front, so one that reads a single text allocates one).
        while !self.slots.is_empty() && (self.slots.len() >= SLOTS || self.bytes + text.len() > BUDGET) {
            self.victim %= self.slots.len();
            self.bytes -= self.slots.remove(self.victim).text.len();
        }
        self.victim = self.victim.min(self.slots.len());
        self.bytes += text.len();
        self.slots.insert(self.victim, known);
        self.last = self.victim;
        self.victim += 1;
    }
}

/// A statement's bounds with its whitespace trimmed (`str::trim`, as the analyzer hashes it).
fn trimmed(text: &str, start: usize, end: usize, key: u128) -> (usize, usize, u128) {
    let piece = &text[start..end];
    let lead = piece.len() - piece.trim_start().len();
    (start + lead, start + lead + piece.trim().len(), key)
}

/// `str::trim_end` of a piece whose last literal may end in whitespace (an unterminated string
/// in the new text): the kept bound then falls short of it. Valid UTF-8 (`rematch` checked).
fn trim_end(piece: &[u8]) -> &[u8] {
    match piece.last() {
        Some(&c) if c.is_ascii_whitespace() || c >= 0x80 => {
            std::str::from_utf8(piece).map_or(piece, |s| s.trim_end().as_bytes())
        }
        _ => piece,
    }
}

impl Known {
    /// This text's literals when `new` is it with other literal values, and whether it is
    /// this text exactly (asked only of texts without literals or that match only exactly).
    fn matches(&self, new: &[u8]) -> Option<(Literals, bool)> {
        if self.exact_only || self.literals.count() == 0 {
            return (*self.text == *new).then_some((self.literals, true));
        }
        Some((rematch(&self.text, &self.literals, new, self.backslash_quotes)?, false))
    }

    /// The reading for `text`, which matched with these literals.
    fn reuse(
        &mut self,
        text: &[u8],
        found: (Literals, bool),
        analyzer: &LocalAnalyzer,
        out: (&mut Analyzed, &mut Literals),
    ) -> Arc<Scan> {
        let ((literals, exact), (analyzed, one)) = (found, out);
        self.reuses += 1;
        if self.reuses >= RECHECK {
            self.reuses = 0;
            for (&(_, _, key), (analysis, _)) in self.statements.iter().zip(self.analyzed.iter_mut()) {
                analyzer.refresh(key, analysis);
            }
        }
        if exact {
            *analyzed = self.analyzed.clone();
        } else {
            let at = |pos| shift(&self.literals, &literals, pos);
            let statements = self.statements.iter().zip(&self.analyzed);
            analyzed.clear();
            analyzed.extend(statements.map(|(&(start, end, _), (analysis, _))| {
                (analysis.clone(), params_hash(trim_end(text.get(at(start)..at(end)).unwrap_or_default())))
            }));
        }
        if self.statements.len() == 1 {
            *one = literals;
        }
        self.scan.clone()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::{KnownTexts, BUDGET, SLOTS};
    use crate::frontend::sql_scan::Scan;
    use crate::sql::recent::LocalAnalyzer;
    use crate::sql::rematch::all_literals;
    use crate::sql::tokens::shapes;
    use crate::sql::Analyzer;

    fn find(known: &mut KnownTexts, analyzer: &LocalAnalyzer, text: &str) -> Option<Arc<Scan>> {
        known.find(text.as_bytes(), false, analyzer, (&mut Default::default(), &mut Default::default()))
    }

    fn read(known: &mut KnownTexts, analyzer: &LocalAnalyzer, text: &str) {
        known.read_one = true;
        let shapes = shapes(text);
        let analyzed = analyzer.shared().analyze_shapes(text, &shapes, false);
        let scan = Arc::new(super::super::sql_scan::from_analyses(text, &shapes, &analyzed));
        known.remember(text, &shapes, (&analyzed, &scan), false, analyzer);
    }

    #[test]
    fn a_cycle_of_statements_is_found_with_new_literals() {
        let analyzer = LocalAnalyzer::new(Arc::new(Analyzer::new(100)));
        let mut known = KnownTexts::default();
        let script = [
            "BEGIN;",
            "UPDATE a SET b = b + 5 WHERE c = 1;",
            " SELECT b FROM a WHERE c = 1 ;\u{3000}",
            "SELECT 1; SELECT 'a' , 1 ;",
            "END;",
        ];
        for text in script {
            read(&mut known, &analyzer, text);
        }
        for round in 0..3 {
            for text in script {
                let new = text.replace(" 1 ", &format!(" {round}{round} ")).replace(" 1;", &format!(" 1{round}0;"));
                let (mut analyzed, mut literals) = (crate::sql::Analyzed::new(), Default::default());
                known.find(new.as_bytes(), false, &analyzer, (&mut analyzed, &mut literals)).expect("remembered");
                // The analyses and literal hashes the analyzer gives the new text.
                assert_eq!(analyzed, analyzer.shared().analyze_all(&new), "{new:?}");
                let expected = all_literals(&shapes(&new)).filter(|_| analyzed.len() == 1).unwrap_or_default();
                assert_eq!(literals, expected);
            }
        }
        assert!(find(&mut known, &analyzer, "SELECT b FROM a WHERE c = 'x';").is_none(), "another kind of literal");
        assert!(
            known
                .find(
                    b"SELECT b FROM a WHERE c = 1;",
                    true,
                    &analyzer,
                    (&mut Default::default(), &mut Default::default())
                )
                .is_none(),
            "read another way"
        );
    }

    #[test]
    fn a_sessions_first_text_is_not_kept() {
        let analyzer = LocalAnalyzer::new(Arc::new(Analyzer::new(100)));
        let mut known = KnownTexts::default();
        let text = "SELECT b FROM a WHERE c = 1";
        let shapes = shapes(text);
        let analyzed = analyzer.shared().analyze_shapes(text, &shapes, false);
        let scan = Arc::new(super::super::sql_scan::from_analyses(text, &shapes, &analyzed));
        known.remember(text, &shapes, (&analyzed, &scan), false, &analyzer);
        assert!(find(&mut known, &analyzer, text).is_none());
        known.remember(text, &shapes, (&analyzed, &scan), false, &analyzer);
        assert!(find(&mut known, &analyzer, "SELECT b FROM a WHERE c = 2").is_some());
    }

    /// A statement's trimmed end inside a literal (unterminated, ending in spaces) is not kept;
    /// a new text whose literal ends so is hashed as the analyzer trims it.
    #[test]
    fn trailing_whitespace_inside_a_literal_is_trimmed_as_the_analyzer_does() {
        let analyzer = LocalAnalyzer::new(Arc::new(Analyzer::new(100)));
        let mut known = KnownTexts::default();
        read(&mut known, &analyzer, "SELECT 'abcdefgh  ");
        assert!(find(&mut known, &analyzer, "SELECT 'x").is_none());
        read(&mut known, &analyzer, "SELECT 'a'");
        let (mut analyzed, mut literals) = (crate::sql::Analyzed::new(), Default::default());
        known.find(b"SELECT 'x \n", false, &analyzer, (&mut analyzed, &mut literals)).expect("the same shape");
        assert_eq!(analyzed[0].1, analyzer.shared().analyze_all("SELECT 'x \n")[0].1);
    }

    /// set_config's setting name is read off the literal: the scan holds only for the same bytes.
    #[test]
    fn a_scan_that_read_a_literal_is_reused_only_for_the_same_text() {
        let analyzer = LocalAnalyzer::new(Arc::new(Analyzer::new(100)));
        let mut known = KnownTexts::default();
        read(&mut known, &analyzer, "SELECT set_config('app.a', '1', false)");
        let found = find(&mut known, &analyzer, "SELECT set_config('app.a', '1', false)").expect("the same text");
        assert_eq!(found.names, ["app.a"]);
        assert!(find(&mut known, &analyzer, "SELECT set_config('app.b', '1', false)").is_none());
    }

    #[test]
    fn slots_and_bytes_are_bounded() {
        let analyzer = LocalAnalyzer::new(Arc::new(Analyzer::new(100)));
        let mut known = KnownTexts::default();
        for i in 0..SLOTS + 2 {
            read(&mut known, &analyzer, &format!("SELECT c{i} FROM t WHERE x = 1"));
        }
        assert!(find(&mut known, &analyzer, "SELECT c0 FROM t WHERE x = 2").is_none(), "the oldest went");
        assert!(find(&mut known, &analyzer, &format!("SELECT c{} FROM t WHERE x = 2", SLOTS + 1)).is_some());
        let long = |c: char| format!("SELECT {} FROM t WHERE x = 1", c.to_string().repeat(BUDGET / 2));
        read(&mut known, &analyzer, &long('a'));
        read(&mut known, &analyzer, &long('b'));
        assert!(known.bytes <= BUDGET, "{} bytes kept", known.bytes);
        assert!(find(&mut known, &analyzer, &long('b').replace("= 1", "= 2")).is_some());
        assert!(find(&mut known, &analyzer, &long('a')).is_none(), "made room");
    }
}
