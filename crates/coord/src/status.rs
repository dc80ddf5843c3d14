//! What a worker reports about itself: its state, progress, spend and how
//! long its units take.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use crate::sync::{self, Mutex};

/// How many recent unit durations a worker keeps for its percentiles.
const DURATION_WINDOW: usize = 512;

/// Where a worker is in its life, as shown by [`WorkerStatus`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WorkerState {
    /// Inside a unit of work.
    Running,
    /// Running, with nothing to do: sleeping until new work.
    Idle,
    /// A pause is requested and the worker is still inside a unit.
    Pausing,
    /// A pause is requested and the worker has parked.
    Paused,
    /// Told to stop, still finishing a unit.
    Stopping,
    /// Not started, or stopped.
    Stopped,
    /// Disabled: it will not start until enabled.
    Disabled,
}

impl WorkerState {
    /// Returns the state's name in lower case ("running", "paused", ...).
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Running => "running",
            WorkerState::Idle => "idle",
            WorkerState::Pausing => "pausing",
            WorkerState::Paused => "paused",
            WorkerState::Stopping => "stopping",
            WorkerState::Stopped => "stopped",
            WorkerState::Disabled => "disabled",
        }
    }
}

impl fmt::Display for WorkerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Percentiles of recent unit durations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DurationStats {
    /// How many recent units the figures cover (at most 512).
    pub samples: usize,
    /// Median.
    pub p50: Duration,
    /// 90th percentile.
    pub p90: Duration,
    /// 99th percentile.
    pub p99: Duration,
}

/// A snapshot of one worker, from [`Worker::status`](crate::Worker::status).
#[derive(Clone, Debug, PartialEq)]
pub struct WorkerStatus {
    /// The worker's name.
    pub name: String,
    /// Where the worker is in its life.
    pub state: WorkerState,
    /// `false` once disabled.
    pub enabled: bool,
    /// `true` while its thread is alive.
    pub running: bool,
    /// `true` while a pause is requested, parked or not.
    pub paused: bool,
    /// Items taken up: completed, failed and the one in hand.
    pub total: u64,
    /// Items finished successfully.
    pub completed: u64,
    /// Items that failed or panicked.
    pub failed: u64,
    /// The item in hand, if any.
    pub current: Option<String>,
    /// The last item's result: its summary, or what went wrong.
    pub last_result: Option<String>,
    /// Items still waiting, as last reported by the task.
    pub backlog: Option<u64>,
    /// Sum of the items' costs.
    pub spend: f64,
    /// Durations of recent units.
    pub durations: DurationStats,
}

/// The mutable part of a worker's status, shared by its thread and readers.
#[derive(Default)]
pub(crate) struct StatusCell {
    data: Mutex<StatusData>,
}

#[derive(Default)]
pub(crate) struct StatusData {
    pub(crate) completed: u64,
    pub(crate) failed: u64,
    pub(crate) current: Option<String>,
    pub(crate) last_result: Option<String>,
    pub(crate) backlog: Option<u64>,
    pub(crate) spend: f64,
    durations: VecDeque<Duration>,
}

impl StatusCell {
    pub(crate) fn set_backlog(&self, items: u64) {
        sync::lock(&self.data).backlog = Some(items);
    }

    pub(crate) fn start_item(&self, label: String) {
        sync::lock(&self.data).current = Some(label);
    }

    /// Records the end of an item: `Ok((summary, cost))` or `Err(message)`.
    pub(crate) fn finish_item(&self, result: Result<(String, f64), String>, took: Duration) {
        let mut data = sync::lock(&self.data);
        data.current = None;
        match result {
            Ok((summary, cost)) => {
                data.completed += 1;
                data.spend += cost;
                data.last_result = Some(summary);
            }
            Err(message) => {
                data.failed += 1;
                data.last_result = Some(format!("failed: {message}"));
            }
        }
        if data.durations.len() == DURATION_WINDOW {
            data.durations.pop_front();
        }
        data.durations.push_back(took);
    }

    /// Records a failure that belongs to no item (a failed look-up).
    pub(crate) fn note_failure(&self, message: String) {
        let mut data = sync::lock(&self.data);
        data.current = None;
        data.last_result = Some(format!("failed: {message}"));
    }

    pub(crate) fn snapshot(&self) -> (StatusData, DurationStats) {
        let data = sync::lock(&self.data);
        let mut sorted: Vec<Duration> = data.durations.iter().copied().collect();
        sorted.sort_unstable();
        let stats = DurationStats {
            samples: sorted.len(),
            p50: percentile(&sorted, 50),
            p90: percentile(&sorted, 90),
            p99: percentile(&sorted, 99),
        };
        let copy = StatusData {
            completed: data.completed,
            failed: data.failed,
            current: data.current.clone(),
            last_result: data.last_result.clone(),
            backlog: data.backlog,
            spend: data.spend,
            durations: VecDeque::new(),
        };
        (copy, stats)
    }
}

/// Nearest-rank percentile of sorted samples; zero when there are none.
fn percentile(sorted: &[Duration], pct: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (pct * sorted.len()).div_ceil(100).max(1);
    sorted[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&samples, 50), Duration::from_millis(50));
        assert_eq!(percentile(&samples, 90), Duration::from_millis(90));
        assert_eq!(percentile(&samples, 99), Duration::from_millis(99));
        assert_eq!(percentile(&samples[..1], 99), Duration::from_millis(1));
        assert_eq!(percentile(&[], 50), Duration::ZERO);
    }

    #[test]
    fn window_keeps_the_most_recent_durations() {
        let cell = StatusCell::default();
        for ms in 0..(DURATION_WINDOW as u64 + 10) {
            cell.finish_item(Ok(("ok".into(), 0.5)), Duration::from_millis(ms));
        }
        let (data, stats) = cell.snapshot();
        assert_eq!(stats.samples, DURATION_WINDOW);
        assert_eq!(data.completed, DURATION_WINDOW as u64 + 10);
        assert_eq!(
            stats.p50,
            Duration::from_millis(10 + DURATION_WINDOW as u64 / 2 - 1)
        );
    }
}
