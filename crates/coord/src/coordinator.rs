//! Safe states: no foreground work in flight, every background worker
//! parked, no new work admitted.
//!
//! A prepare takes, in order: an admission hold for orchestrators (so
//! nothing new starts while it waits), a set-wide pause hold on the
//! workers, then waits (under one deadline) for running orchestrators to
//! finish and for every worker to park. On success the holds move into the
//! returned [`SafeState`]; on timeout they are dropped, which undoes
//! exactly what this prepare did and nothing else. Because everything is a
//! hold, safe states nest and overlap freely, and a user's own pause of a
//! worker is never lifted by a safe state ending.

use std::fmt;
use std::time::{Duration, Instant};

use crate::counter::{AdmissionHold, WorkerCounter};
use crate::error::NotSafe;
use crate::kind::WorkerKind;
use crate::sync::{Arc, AtomicUsize, Ordering};
use crate::workers::{BackgroundWorkers, WorkersHold};
use crate::Error;

/// What a safe state is for; it appears in status and errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Purpose {
    /// Copying the database.
    Backup,
    /// Handing the terminal to an external editor.
    ExternalEditor,
    /// Anything else that must not interleave with work: migrations,
    /// vacuum, switching models.
    Maintenance,
}

impl fmt::Display for Purpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Purpose::Backup => "backup",
            Purpose::ExternalEditor => "the external editor",
            Purpose::Maintenance => "maintenance",
        })
    }
}

/// Brings the program to a safe state on demand.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use nu_coord::{BackgroundWorkers, WorkCoordinator, WorkerCounter, WorkerKind};
///
/// let counter = WorkerCounter::new();
/// let workers = BackgroundWorkers::new(&counter);
/// let coordinator = WorkCoordinator::new(&counter, &workers);
///
/// // An exchange in flight keeps the safe state from being reached.
/// let exchange = counter.token(WorkerKind::Orchestrator);
/// exchange.activate()?;
/// let err = coordinator.prepare_for_backup(Duration::from_millis(50)).unwrap_err();
/// assert!(err.to_string().contains("1 exchange still running"));
///
/// exchange.release();
/// let safe = coordinator.prepare_for_backup(Duration::from_secs(1))?;
/// // New exchanges are refused while the safe state is held...
/// assert!(counter.token(WorkerKind::Orchestrator).activate().is_err());
/// drop(safe);
/// // ...and admitted again once it is dropped.
/// assert!(counter.token(WorkerKind::Orchestrator).activate()?);
/// # Ok::<(), nu_coord::Error>(())
/// ```
#[derive(Clone)]
pub struct WorkCoordinator {
    counter: WorkerCounter,
    workers: BackgroundWorkers,
    held: Arc<AtomicUsize>,
}

/// A snapshot of what the coordinator sees, from [`WorkCoordinator::status`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CoordinatorStatus {
    /// Orchestrators running now.
    pub orchestrators: usize,
    /// Background workers running now (paused ones included).
    pub background_workers: usize,
    /// `true` if every background worker has a pause requested.
    pub paused: bool,
    /// `true` if every background worker has parked under a pause.
    pub parked: bool,
    /// Safe states currently held.
    pub safe_states: usize,
    /// `false` while new orchestrators are refused or kept waiting.
    pub admitting: bool,
}

impl WorkCoordinator {
    /// Creates a coordinator over `counter` and `workers`.
    pub fn new(counter: &WorkerCounter, workers: &BackgroundWorkers) -> Self {
        Self {
            counter: counter.clone(),
            workers: workers.clone(),
            held: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Reaches a safe state for copying the database; see
    /// [`prepare`](Self::prepare).
    ///
    /// # Errors
    ///
    /// [`Error::NotSafe`] if the timeout passes first.
    pub fn prepare_for_backup(&self, timeout: Duration) -> Result<SafeState, Error> {
        self.prepare(Purpose::Backup, timeout)
    }

    /// Reaches a safe state for handing the terminal to an editor; see
    /// [`prepare`](Self::prepare).
    ///
    /// # Errors
    ///
    /// [`Error::NotSafe`] if the timeout passes first.
    pub fn prepare_for_external_editor(&self, timeout: Duration) -> Result<SafeState, Error> {
        self.prepare(Purpose::ExternalEditor, timeout)
    }

    /// Closes admission, pauses every worker, and waits for running
    /// orchestrators to finish and every worker to park, all within one
    /// `timeout`. The returned guard keeps the safe state until dropped.
    ///
    /// While the prepare waits, new orchestrators are already refused or
    /// kept waiting, so a steady stream of exchanges can not starve it.
    ///
    /// # Errors
    ///
    /// [`Error::NotSafe`] if the timeout passes first, saying how many
    /// exchanges were still running and which workers were still inside a
    /// unit. The attempt's own holds are dropped before it returns:
    /// admission reopens (unless another safe state keeps it closed) and
    /// the workers it paused resume, while workers paused by anyone else
    /// stay paused.
    pub fn prepare(&self, purpose: Purpose, timeout: Duration) -> Result<SafeState, Error> {
        let started = Instant::now();
        let deadline = started.checked_add(timeout);
        let admission = self.counter.close_admission(WorkerKind::Orchestrator);
        let workers = self.workers.hold_all();

        let idle = self
            .counter
            .inner
            .wait_idle(WorkerKind::Orchestrator.into(), deadline);
        let workers_in_unit = self.workers.wait_all_parked_until(deadline);
        if !idle || !workers_in_unit.is_empty() {
            let orchestrators = self.counter.active_count(WorkerKind::Orchestrator);
            // Undo: drop our holds (and only ours) before reporting.
            drop(workers);
            drop(admission);
            return Err(NotSafe {
                purpose,
                timeout,
                orchestrators,
                workers_in_unit,
            }
            .into());
        }

        self.held.fetch_add(1, Ordering::SeqCst);
        Ok(SafeState {
            purpose,
            since: Instant::now(),
            reached_in: started.elapsed(),
            _workers: workers,
            _admission: admission,
            held: self.held.clone(),
        })
    }

    /// Returns the counts, whether the workers are paused and parked, and
    /// how many safe states are held.
    pub fn status(&self) -> CoordinatorStatus {
        let counts = self.counter.all_counts();
        CoordinatorStatus {
            orchestrators: counts.orchestrators,
            background_workers: counts.background_workers,
            paused: self.workers.all_paused(),
            parked: self.workers.all_parked(),
            safe_states: self.held.load(Ordering::SeqCst),
            admitting: self.counter.is_admitting(WorkerKind::Orchestrator),
        }
    }

    /// Returns the counter this coordinator watches.
    pub fn counter(&self) -> &WorkerCounter {
        &self.counter
    }

    /// Returns the workers this coordinator pauses.
    pub fn workers(&self) -> &BackgroundWorkers {
        &self.workers
    }
}

impl fmt::Debug for WorkCoordinator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkCoordinator")
            .field("status", &self.status())
            .finish()
    }
}

/// A safe state, held until dropped.
///
/// While it lives, no orchestrator is admitted and every background worker
/// is held paused. Dropping it is the cleanup: it lifts this safe state's
/// holds, so workers resume and admission reopens unless another safe
/// state (or a user's pause) still holds them.
#[must_use = "the safe state ends as soon as the guard is dropped"]
pub struct SafeState {
    purpose: Purpose,
    since: Instant,
    reached_in: Duration,
    // Field order is drop order: workers resume, then admission reopens.
    _workers: WorkersHold,
    _admission: AdmissionHold,
    held: Arc<AtomicUsize>,
}

impl SafeState {
    /// Returns what the safe state is for.
    pub fn purpose(&self) -> Purpose {
        self.purpose
    }

    /// Returns how long the prepare took to reach the safe state.
    pub fn reached_in(&self) -> Duration {
        self.reached_in
    }

    /// Returns how long the safe state has been held.
    pub fn held_for(&self) -> Duration {
        self.since.elapsed()
    }

    /// Ends the safe state and returns how long it was held: the same as
    /// dropping it, with a figure to report.
    pub fn release(self) -> Duration {
        self.since.elapsed()
    }
}

impl Drop for SafeState {
    fn drop(&mut self) {
        self.held.fetch_sub(1, Ordering::SeqCst);
    }
}

impl fmt::Debug for SafeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SafeState")
            .field("purpose", &self.purpose)
            .field("held_for", &self.held_for())
            .finish()
    }
}
