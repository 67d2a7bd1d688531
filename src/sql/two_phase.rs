//! PREPARE TRANSACTION, COMMIT PREPARED and ROLLBACK PREPARED, read from a text's token shapes
//! with their transaction's identifier: DDL a prepared transaction ran takes effect at its COMMIT
//! PREPARED, which may come from another session (the pooling must see that commit as DDL).

use super::tokens;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Prepare,
    Commit,
    Rollback,
}

/// The two-phase statement a token shape is (`tokens::Shape::text`), if any.
pub fn phase(shape: &str) -> Option<Phase> {
    match shape {
        "prepare transaction ?" => Some(Phase::Prepare),
        "commit prepared ?" => Some(Phase::Commit),
        "rollback prepared ?" => Some(Phase::Rollback),
        _ => None,
    }
}

/// Each two-phase statement of `text` with its identifier as written (`'g'`: the same spelling
/// at PREPARE and COMMIT is the common case; another spelling is only a missed match).
pub fn statements(text: &str, backslash_quotes: bool) -> Vec<(Phase, String)> {
    tokens::shapes_with(text, backslash_quotes)
        .iter()
        .filter_map(|s| {
            let span = s.literals.get(0)?;
            Some((phase(&s.text)?, text.get(span.start..span.end)?.to_string()))
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
        assert_eq!(statements("ROLLBACK PREPARED 'g'", false), [(Phase::Rollback, "'g'".to_string())]);
        for other in ["COMMIT", "PREPARE p AS SELECT 1", "SELECT 'prepare transaction'", "COMMIT AND CHAIN"] {
            assert!(statements(other, false).is_empty(), "{other}");
        }
    }
}
