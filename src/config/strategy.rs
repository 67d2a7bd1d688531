//! `[strategy]`: what pgpilot decides per statement fingerprint from what it measures (see
//! src/strategy), its thresholds, and the pins an operator puts over those decisions.

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StrategyConfig {
    /// Off: every cacheable read is looked up, no fingerprint gets a lane, a BEGIN takes its
    /// connection at once (the static behaviour of a plain pooler with a result cache).
    pub enabled: bool,
    /// Lookups per cache decision of one fingerprint.
    pub cache_window: u32,
    /// A cheap read (its miss under `cache_cheap_miss_ms`) whose results repeat in fewer than
    /// this share of its lookups stops being looked up; a dearer read is kept at a proportionally
    /// lower share (a 300 ms search pays for thousands of lookups with one hit).
    pub cache_min_hit_ratio: f64,
    pub cache_cheap_miss_ms: u64,
    /// A fingerprint the cache looks past is looked up again for a window after this long.
    pub cache_reprobe_s: u64,
    /// An entry's TTL is this many mean intervals between writes to its tables (bounded by the
    /// configured TTL, at least 1 s): results of a table written every second are not kept for
    /// five minutes after the writes stop reaching pgpilot. 0: the configured TTL only.
    pub cache_ttl_write_intervals: u32,
    /// Fingerprints whose p95 is above `slow_lane_factor` times the median p95 of their pool's
    /// fingerprints (after `slow_lane_min_calls` calls, and above `slow_lane_min_p95_ms`) may
    /// hold at most `slow_lane_share` of the pool's connections.
    pub slow_lane: bool,
    pub slow_lane_factor: f64,
    pub slow_lane_min_calls: u64,
    pub slow_lane_min_p95_ms: f64,
    pub slow_lane_share: f64,
    /// Serve a repeated unnamed statement from one prepared on the server unless that measures
    /// slower (`prepared::adaptive`), as `prepared.reuse_unnamed` does for every statement.
    pub server_prepared: bool,
    /// A plain BEGIN is answered here and sent with the transaction's first statement, so the
    /// connection (and its lane) is chosen by what the transaction runs.
    pub defer_begin: bool,
    /// Per fingerprint (hex id as in /queries) or table: a strategy that overrides the measured one.
    pub pins: Vec<Pin>,
}

impl Default for StrategyConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            cache_window: 200,
            cache_min_hit_ratio: 0.3,
            cache_cheap_miss_ms: 2,
            cache_reprobe_s: 60,
            cache_ttl_write_intervals: 10,
            slow_lane: true,
            slow_lane_factor: 5.0,
            slow_lane_min_calls: 20,
            slow_lane_min_p95_ms: 20.0,
            slow_lane_share: 0.5,
            server_prepared: true,
            defer_begin: true,
            pins: Vec::new(),
        }
    }
}

/// `[[strategy.pins]]`: `fingerprint` or `table` (a read or write of that unqualified name).
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Pin {
    pub fingerprint: Option<String>,
    pub table: Option<String>,
    pub strategy: PinnedStrategy,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PinnedStrategy {
    /// Always looked up in the result cache (when it is a cacheable read), whatever its hit ratio.
    Cache,
    /// Never looked up, never in the slow lane.
    #[default]
    PassThrough,
    /// Always in the slow lane.
    SlowLane,
}

impl StrategyConfig {
    /// Errors a config file can hold that serde does not catch.
    pub fn check(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.cache_min_hit_ratio) {
            return Err("strategy.cache_min_hit_ratio must be between 0 and 1".into());
        }
        if !(self.slow_lane_share > 0.0 && self.slow_lane_share <= 1.0) {
            return Err("strategy.slow_lane_share must be above 0 and at most 1".into());
        }
        if self.cache_window == 0 {
            return Err("strategy.cache_window must be at least 1".into());
        }
        match self.pins.iter().find(|p| p.fingerprint.is_some() == p.table.is_some()) {
            Some(_) => Err("each [[strategy.pins]] names exactly one of fingerprint or table".into()),
            None => Ok(()),
        }
    }

    /// The pin over a fingerprint (hex) reading or writing `tables`, if any: fingerprints first.
    pub fn pin_for(&self, fingerprint: &str, tables: &[&str]) -> Option<PinnedStrategy> {
        let by_fp =
            self.pins.iter().find(|p| p.fingerprint.as_deref().is_some_and(|f| f.eq_ignore_ascii_case(fingerprint)));
        let by_table = || {
            self.pins
                .iter()
                .find(|p| p.table.as_deref().is_some_and(|t| tables.iter().any(|n| n.eq_ignore_ascii_case(t))))
        };
        by_fp.or_else(by_table).map(|p| p.strategy)
    }
}
