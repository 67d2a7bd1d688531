//! A commit decoded from the WAL is not yet visible: the server writes and flushes the commit
//! record, and only then removes the transaction from its in-progress list (after any wait for a
//! synchronous standby). The stream can decode and apply a commit inside that window, and a read
//! run then still sees the old row and would be stored under the new generations. So every
//! commit the stream applies is applied again once a snapshot taken by the stream's probe shows
//! its transaction no longer in progress: entries filled in the window are ended then, and the
//! stream counts as fresh only up to commits applied twice.

use super::scopes::Written;
use std::collections::VecDeque;

/// Commits awaiting their second invalidation, beyond which they are merged into one that
/// invalidates the whole database (a stream far ahead of visibility, or a flood of commits).
const MAX_PENDING: usize = 4096;

/// What `txid_current_snapshot()` says: 64-bit (epoch-extended) transaction ids.
#[derive(Debug, PartialEq, Eq)]
pub struct Snapshot {
    xmax: u64,
    in_progress: Vec<u64>,
}

/// "xmin:xmax:xip1,xip2" as PostgreSQL prints a snapshot.
pub fn parse_snapshot(text: &str) -> Option<Snapshot> {
    let mut parts = text.trim().splitn(3, ':');
    let _xmin: u64 = parts.next()?.parse().ok()?;
    let xmax = parts.next()?.parse().ok()?;
    let xip = parts.next()?;
    let in_progress =
        if xip.is_empty() { Vec::new() } else { xip.split(',').map(|x| x.parse().ok()).collect::<Option<_>>()? };
    Some(Snapshot { xmax, in_progress })
}

impl Snapshot {
    /// Whether the committed transaction `xid` (32 bits, as the stream prints it) has become
    /// visible: assigned before the snapshot and no longer in progress in it.
    pub fn sees(&self, xid: u32) -> bool {
        // How far before xmax, in the 2^31 window PostgreSQL's wraparound rules keep ids within.
        let before = (self.xmax as u32).wrapping_sub(xid) as i32;
        if before <= 0 {
            return false;
        }
        let full = self.xmax.saturating_sub(before as u64);
        !self.in_progress.contains(&full)
    }
}

/// A committed transaction applied once: its commit LSN, transaction ids (several once merged)
/// and what it invalidated (None: the whole database).
struct Pending {
    lsn: u64,
    xids: Vec<u32>,
    names: Option<Vec<Written>>,
}

#[derive(Default)]
pub struct Rebumps {
    pending: VecDeque<Pending>,
}

impl Rebumps {
    /// A commit applied once (`xid` None: unknown, applied again at the next probe).
    pub fn push(&mut self, lsn: u64, xid: Option<u32>, names: Option<Vec<Written>>) {
        if self.pending.len() >= MAX_PENDING {
            let xids = self.pending.drain(..).flat_map(|p| p.xids).collect();
            self.pending.push_back(Pending { lsn, xids, names: None });
        }
        let xids = xid.into_iter().collect();
        self.pending.push_back(Pending { lsn, xids, names });
    }

    /// The commits `snapshot` shows visible, removed: what to invalidate again (in order).
    pub fn visible(&mut self, snapshot: &Snapshot) -> Vec<Option<Vec<Written>>> {
        let mut out = Vec::new();
        self.pending.retain_mut(|p| {
            let seen = p.xids.iter().all(|&x| snapshot.sees(x));
            if seen {
                out.push(p.names.take());
            }
            !seen
        });
        out
    }

    /// The commit LSN of the oldest commit applied only once.
    pub fn oldest(&self) -> Option<u64> {
        self.pending.iter().map(|p| p.lsn).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_tell_visible_commits() {
        let s = parse_snapshot("100:110:103,107").unwrap();
        assert!(s.sees(99) && s.sees(104) && s.sees(109));
        assert!(!s.sees(103) && !s.sees(107), "still in progress");
        assert!(!s.sees(110) && !s.sees(200), "not assigned before the snapshot");
        let wrapped = parse_snapshot(&format!("{}:{}:", (1u64 << 32) + 5, (1u64 << 32) + 10)).unwrap();
        assert!(wrapped.sees(u32::MAX - 1), "the previous epoch");
        assert!(wrapped.sees(7) && !wrapped.sees(10));
        assert_eq!(parse_snapshot("1:2"), None);
        assert_eq!(parse_snapshot("a:2:"), None);
        assert_eq!(parse_snapshot("1:2:x"), None);
    }

    #[test]
    fn commits_wait_for_their_snapshot_in_any_order() {
        let mut r = Rebumps::default();
        let t = |n: &str| Some(vec![Written::table(std::sync::Arc::from(n))]);
        r.push(10, Some(5), t("a"));
        r.push(20, Some(6), t("b"));
        r.push(30, None, None);
        assert_eq!(r.oldest(), Some(10));
        let got = r.visible(&parse_snapshot("4:7:5").unwrap());
        assert_eq!(got, vec![t("b"), None], "5 is still in progress; 6 and the unknown one are done");
        assert_eq!(r.oldest(), Some(10));
        assert_eq!(r.visible(&parse_snapshot("7:7:").unwrap()), vec![t("a")]);
        assert_eq!(r.oldest(), None);
        for i in 0..(MAX_PENDING as u32 + 1) {
            r.push(u64::from(i), Some(i), t("x"));
        }
        assert_eq!(r.pending.len(), 2, "merged into one that waits for all");
        assert_eq!(
            r.visible(&parse_snapshot(&format!("0:{MAX_PENDING}:")).unwrap()),
            vec![None],
            "merged: the database"
        );
    }
}
