//! What a background task is: the trait a program implements, and the
//! handle a unit of work uses to reach checkpoints.

use std::fmt;

use crate::gate::{Checkpoint, Gate};
use crate::shutdown::Shutdown;
use crate::status::StatusCell;

/// An error from a background task; any error type will do.
pub type TaskError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Background work done one item at a time by a [`Worker`](crate::Worker).
///
/// The worker thread calls [`next_item`](Self::next_item) to find work and
/// [`run_item`](Self::run_item) to do it. Each call is one *unit of work*:
/// between units the worker checks its pause gate and counts as parked;
/// inside a unit it counts as running until the unit returns or reaches
/// [`Unit::checkpoint`]. When there is nothing to do, the worker sleeps
/// until it is nudged, resumed, stopped, or its idle interval passes.
///
/// An error or a panic in either method counts as a failed unit: it is
/// recorded in the status and the worker carries on with the next item.
///
/// # Examples
///
/// ```
/// use std::collections::VecDeque;
/// use nu_coord::{BackgroundTask, Outcome, TaskError, Unit};
///
/// struct Squares(VecDeque<u64>);
///
/// impl BackgroundTask for Squares {
///     type Item = u64;
///
///     fn next_item(&mut self, unit: &Unit<'_>) -> Result<Option<u64>, TaskError> {
///         unit.set_backlog(self.0.len() as u64);
///         Ok(self.0.pop_front())
///     }
///
///     fn describe(&self, item: &u64) -> String {
///         format!("square of {item}")
///     }
///
///     fn run_item(&mut self, item: u64, unit: &Unit<'_>) -> Result<Outcome, TaskError> {
///         if unit.checkpoint().is_shutdown() {
///             return Err("stopped".into());
///         }
///         Ok(Outcome::new((item * item).to_string()))
///     }
/// }
/// ```
pub trait BackgroundTask: Send + 'static {
    /// One piece of work.
    type Item;

    /// Returns the next item to work on, or `None` when there is none.
    ///
    /// This runs inside a unit of work (it typically reads the database),
    /// so a pause waits for it to return.
    ///
    /// # Errors
    ///
    /// Any error is recorded as a failed look-up; the worker then sleeps
    /// for its idle interval before it looks again.
    fn next_item(&mut self, unit: &Unit<'_>) -> Result<Option<Self::Item>, TaskError>;

    /// Names an item for the status ("exchange 42").
    fn describe(&self, item: &Self::Item) -> String;

    /// Does the work for one item.
    ///
    /// Long work should call [`Unit::checkpoint`] at points where pausing
    /// is safe, so that a pause need not wait for the whole item.
    ///
    /// # Errors
    ///
    /// Any error counts the item as failed; the worker goes on.
    fn run_item(&mut self, item: Self::Item, unit: &Unit<'_>) -> Result<Outcome, TaskError>;
}

/// What a finished item reports for the worker's status.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outcome {
    /// A short description of the result, shown as the last result.
    pub summary: String,
    /// What the item cost, in whatever unit the program accounts in (for
    /// example dollars of model use); summed into the status's spend.
    pub cost: f64,
}

impl Outcome {
    /// Creates an outcome with a summary and no cost.
    pub fn new(summary: impl Into<String>) -> Self {
        Self {
            summary: summary.into(),
            cost: 0.0,
        }
    }

    /// Sets the cost.
    pub fn with_cost(mut self, cost: f64) -> Self {
        self.cost = cost;
        self
    }
}

/// The running unit of work, as the task sees it.
///
/// Passed to [`BackgroundTask::next_item`] and
/// [`BackgroundTask::run_item`].
pub struct Unit<'a> {
    pub(crate) name: &'a str,
    pub(crate) gate: &'a Gate,
    pub(crate) shutdown: &'a Shutdown,
    pub(crate) status: &'a StatusCell,
}

impl Unit<'_> {
    /// A checkpoint inside the unit: returns at once unless a pause is
    /// requested, and otherwise parks the worker here until the pause is
    /// lifted or shutdown is requested. Returns [`Checkpoint::Shutdown`]
    /// once the worker has been asked to stop; the unit should then return
    /// at once. If the stop came during a pause, the worker still counts as
    /// parked (a safe state may be relying on it), so the unit must not
    /// write anything on its way out.
    ///
    /// Call it only where the work holds nothing that a safe state must
    /// not see half-done (no open write transaction, for instance).
    #[inline]
    pub fn checkpoint(&self) -> Checkpoint {
        if self.shutdown.is_requested() {
            return Checkpoint::Shutdown;
        }
        self.gate.checkpoint(Some(self.shutdown), true)
    }

    /// Runs `work` with the worker counted as parked, then goes back to
    /// work, first waiting for any pause requested meanwhile to be lifted.
    ///
    /// This is for the long part of a unit that touches nothing a safe
    /// state protects: a call to a model over the network, say. A pause or
    /// a safe state then takes effect at once instead of waiting for the
    /// call, and the unit writes its result only once it is allowed to run
    /// again. Returns `work`'s result with [`Checkpoint::Shutdown`] if the
    /// worker was asked to stop meanwhile (it then stays parked, and the
    /// unit must return without writing anything).
    ///
    /// # Examples
    ///
    /// ```
    /// # use nu_coord::{Outcome, TaskError, Unit};
    /// fn run_item(text: String, unit: &Unit<'_>) -> Result<Outcome, TaskError> {
    ///     // Slow, and it reads or writes nothing of ours.
    ///     let (summary, checkpoint) = unit.parked(|| text.to_uppercase());
    ///     if checkpoint.is_shutdown() {
    ///         return Err("stopped".into());
    ///     }
    ///     // ... write the summary ...
    ///     Ok(Outcome::new(summary))
    /// }
    /// ```
    pub fn parked<R>(&self, work: impl FnOnce() -> R) -> (R, Checkpoint) {
        self.gate.park();
        let result = work();
        let resumed = self.gate.begin_unit(Some(self.shutdown));
        if !resumed || self.shutdown.is_requested() {
            return (result, Checkpoint::Shutdown);
        }
        (result, Checkpoint::Continue)
    }

    /// Returns `true` once the worker has been asked to stop.
    pub fn is_shutdown(&self) -> bool {
        self.shutdown.is_requested()
    }

    /// Records how many items are still waiting, for the status.
    pub fn set_backlog(&self, items: u64) {
        self.status.set_backlog(items);
    }

    /// Returns the worker's name.
    pub fn worker_name(&self) -> &str {
        self.name
    }
}

impl fmt::Debug for Unit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Unit").field("worker", &self.name).finish()
    }
}
