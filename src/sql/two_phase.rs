//! PREPARE TRANSACTION and COMMIT PREPARED, read from a text's token shapes with their
//! transaction's identifier: DDL a prepared transaction ran takes effect at its COMMIT
//! PREPARED, which may come from another session (the pooling must see that commit as DDL).

use super::tokens;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Prepare,
    Commit,
}

/// PostgreSQL refuses identifiers of 200 bytes or more: a literal much longer (the span counts
/// its quotes, doubled quotes, an E prefix) is no identifier, and is not kept.
const MAX_GID: usize = 1024;

/// The two-phase statement a token shape is (`tokens::Shape::text`), if any. (ROLLBACK PREPARED
/// is not one here: nothing of its transaction takes effect.)
pub fn phase(shape: &str) -> Option<Phase> {
    let folded;
    let shape = if shape.contains('\x0b') {
        // A vertical tab is a separator to PostgreSQL 16 (not to the lexer): `COMMIT\vPREPARED`.
        folded = shape.split_whitespace().collect::<Vec<_>>().join(" ");
        folded.as_str()
    } else {
        shape
    };
    match shape {
        "prepare transaction ?" => Some(Phase::Prepare),
        "commit prepared ?" => Some(Phase::Commit),
        _ => None,
    }
}

/// Each two-phase statement of `text` with its identifier as written (`'g'`: the same spelling
/// at PREPARE and COMMIT is the common case; another spelling is only a missed match).
pub fn statements(text: &str, backslash_quotes: bool) -> Vec<(Phase, String)> {
    tokens::shapes_with(text, backslash_quotes)
        .iter()
        .filter_map(|s| {
            // (An empty span: a literal past the first 64 KiB, whose place is not recorded.)
            let span = s.literals.get(0).filter(|r| !r.is_empty() && r.len() <= MAX_GID)?;
            Some((phase(&s.text)?, text.get(span)?.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_phase_statements_are_read_with_their_identifier() {
        let text = "BEGIN; CREATE TABLE t (a int); PREPARE TRANSACTION 'tx 1'";
        assert_eq!(statements(text, false), [(Phase::Prepare, "'tx 1'".to_string())]);
        assert_eq!(statements("/* c */ commit\nPREPARED 'tx 1';", false), [(Phase::Commit, "'tx 1'".to_string())]);
        assert_eq!(statements("COMMIT\x0bPREPARED 'h'", false), [(Phase::Commit, "'h'".to_string())]);
        let long = format!("COMMIT PREPARED '{}'", "x".repeat(2000));
        for other in ["COMMIT", "PREPARE p AS SELECT 1", "SELECT 'prepare transaction'", "ROLLBACK PREPARED 'g'", &long]
        {
            assert!(statements(other, false).is_empty(), "{other}");
        }
    }
}
