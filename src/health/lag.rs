//! Replica lag from WAL positions and replay timestamps (SPEC §2
//! `routing.max_replica_lag`): the primary's recent WAL positions, each with
//! the time it was read, and the rule that turns a replica's replay position
//! and last replay timestamp into a lag. Pure: no I/O, the caller passes the
//! clock.
//!
//! A replica whose replay position has reached the primary's latest position
//! has no lag. Otherwise two upper bounds on its staleness are known, and
//! the smaller one is its lag: the age of the last transaction it replayed
//! (it has everything committed before that), and the time since the primary
//! was last seen at or below its replay position (it has everything
//! committed before then). The first alone would report a healthy replica
//! of an idle cluster as hours behind the moment a write arrives; the
//! second alone cannot date a replica further behind than the history.
//! While a replica's replay is stuck and writes continue, both grow.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Primary positions kept: at the default 2 s interval, about two minutes.
/// Further behind than that, the replay timestamp dates a replica alone.
const HISTORY_LEN: usize = 64;

/// The primary's WAL positions at recent probe rounds, oldest first.
#[derive(Debug, Default)]
pub struct WalHistory {
    /// Which backend the positions were read from; another primary starts
    /// a new history.
    primary: Option<usize>,
    samples: VecDeque<(u64, Instant)>,
}

impl WalHistory {
    /// Records that backend `primary` reported `lsn` when read at some time
    /// after `at` (pass a time no later than when the probe was sent), so
    /// everything committed before `at` lies at or below `lsn`.
    pub fn record(&mut self, primary: usize, lsn: u64, at: Instant) {
        if self.primary != Some(primary) {
            self.primary = Some(primary);
            self.samples.clear();
        }
        // Positions only grow on one server; anything else (a restored
        // backup behind the same address) invalidates what was seen.
        if self.samples.back().is_some_and(|&(last, _)| lsn < last) {
            self.samples.clear();
        }
        if self.samples.len() == HISTORY_LEN {
            self.samples.pop_front();
        }
        self.samples.push_back((lsn, at));
    }

    /// The latest recorded primary position.
    pub fn latest(&self) -> Option<u64> {
        self.samples.back().map(|&(lsn, _)| lsn)
    }

    /// A replica's lag at `now` from its replay position and the age of its
    /// last replayed transaction. `None` when it is behind and neither bound
    /// is known.
    pub fn lag(
        &self,
        replay_lsn: Option<u64>,
        replay_age: Option<Duration>,
        now: Instant,
    ) -> Option<Duration> {
        let Some(replayed) = replay_lsn else {
            return replay_age;
        };
        if self.latest().is_some_and(|latest| replayed >= latest) {
            return Some(Duration::ZERO);
        }
        let since_caught_up = self
            .samples
            .iter()
            .rev()
            .find(|&&(lsn, _)| lsn <= replayed)
            .map(|&(_, at)| now.saturating_duration_since(at));
        match (replay_age, since_caught_up) {
            (Some(age), Some(since)) => Some(age.min(since)),
            (age, since) => age.or(since),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn a_replica_at_the_primarys_position_has_no_lag() {
        let start = Instant::now();
        let mut history = WalHistory::default();
        history.record(0, 100, start);
        let old_commit = Some(3600 * SECOND);
        let now = start + 10 * SECOND;
        assert_eq!(
            history.lag(Some(100), old_commit, now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            history.lag(Some(150), old_commit, now),
            Some(Duration::ZERO)
        );
        assert_eq!(history.lag(Some(100), None, now), Some(Duration::ZERO));
    }

    #[test]
    fn without_a_primary_position_the_replay_age_is_the_lag() {
        let history = WalHistory::default();
        let now = Instant::now();
        assert_eq!(
            history.lag(Some(5), Some(2 * SECOND), now),
            Some(2 * SECOND)
        );
        assert_eq!(history.lag(Some(5), None, now), None);
        assert_eq!(history.lag(None, Some(SECOND), now), Some(SECOND));
    }

    #[test]
    fn a_write_after_a_long_idle_time_does_not_make_replicas_look_stale() {
        // The primary idled at 100 for an hour, then a write moved it to 200
        // just before this round; the replica has not replayed it yet, and
        // its last replayed transaction is an hour old.
        let start = Instant::now();
        let mut history = WalHistory::default();
        history.record(0, 100, start);
        history.record(0, 200, start + 2 * SECOND);
        let now = start + 2 * SECOND + Duration::from_millis(5);
        let lag = history.lag(Some(100), Some(3600 * SECOND), now);
        assert_eq!(lag, Some(2 * SECOND + Duration::from_millis(5)));
    }

    #[test]
    fn a_busy_replica_lags_by_the_age_of_its_last_replay() {
        let start = Instant::now();
        let mut history = WalHistory::default();
        history.record(0, 100, start);
        history.record(0, 200, start + 2 * SECOND);
        let now = start + 2 * SECOND;
        let age = Some(Duration::from_millis(30));
        assert_eq!(history.lag(Some(150), age, now), age);
    }

    #[test]
    fn a_stuck_replica_lags_more_every_round() {
        let start = Instant::now();
        let mut history = WalHistory::default();
        history.record(0, 100, start);
        let mut previous = Duration::ZERO;
        for round in 1..10u32 {
            let at = start + round * 2 * SECOND;
            history.record(0, 100 + u64::from(round) * 10, at);
            let age = round * 2 * SECOND + SECOND;
            let lag = history.lag(Some(100), Some(age), at).expect("known");
            assert!(lag > previous, "round {round}: {lag:?} after {previous:?}");
            assert_eq!(lag, round * 2 * SECOND);
            previous = lag;
        }
    }

    #[test]
    fn a_replica_behind_the_whole_history_is_dated_by_its_replay_age() {
        let start = Instant::now();
        let mut history = WalHistory::default();
        history.record(0, 500, start);
        history.record(0, 600, start + SECOND);
        let now = start + 2 * SECOND;
        assert_eq!(
            history.lag(Some(100), Some(90 * SECOND), now),
            Some(90 * SECOND)
        );
        assert_eq!(history.lag(Some(100), None, now), None);
        assert_eq!(history.lag(None, None, now), None);
    }

    #[test]
    fn the_history_is_bounded_and_restarts_with_another_primary() {
        let start = Instant::now();
        let mut history = WalHistory::default();
        for i in 0..(HISTORY_LEN as u64 + 10) {
            history.record(0, i, start + Duration::from_millis(i));
        }
        assert_eq!(history.samples.len(), HISTORY_LEN);
        assert_eq!(history.latest(), Some(HISTORY_LEN as u64 + 9));

        history.record(1, 5, start);
        assert_eq!(history.samples.len(), 1);
        assert_eq!(history.latest(), Some(5));

        history.record(1, 3, start);
        assert_eq!(history.samples.len(), 1, "a position going back restarts");
        assert_eq!(history.latest(), Some(3));
    }
}
