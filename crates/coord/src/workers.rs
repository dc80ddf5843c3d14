//! The set of a program's background workers, managed by name.
//!
//! # Holds
//!
//! Besides each worker's own pause switch, the set keeps a number of
//! set-wide holds ([`WorkersHold`]): every worker registered carries one
//! gate hold per set-wide hold in force, added at registration and removed
//! when the hold is dropped, all under the registry lock. So a worker
//! registered during a safe state starts paused too, and dropping a hold
//! lifts exactly the holds it added.
//!
//! Lock order: the registry lock is taken before any worker's locks, and it
//! is never held across a wait.

use std::fmt;
use std::time::{Duration, Instant};

use crate::counter::WorkerCounter;
use crate::status::WorkerStatus;
use crate::sync::{self, Arc, Mutex};
use crate::task::BackgroundTask;
use crate::worker::{Nudger, Worker, WorkerOptions};
use crate::Error;

/// A program's background workers, started, stopped, enabled, disabled,
/// paused and resumed by name or all at once.
///
/// Cheap to clone: clones share the same workers.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use nu_coord::{BackgroundTask, BackgroundWorkers, Outcome, TaskError, Unit, WorkerCounter,
///     WorkerOptions};
///
/// struct Nothing;
/// impl BackgroundTask for Nothing {
///     type Item = ();
///     fn next_item(&mut self, _: &Unit<'_>) -> Result<Option<()>, TaskError> { Ok(None) }
///     fn describe(&self, _: &()) -> String { String::new() }
///     fn run_item(&mut self, _: (), _: &Unit<'_>) -> Result<Outcome, TaskError> {
///         Ok(Outcome::default())
///     }
/// }
///
/// let counter = WorkerCounter::new();
/// let workers = BackgroundWorkers::new(&counter);
/// workers.register("summaries", Nothing, WorkerOptions::default())?;
/// workers.register("embeddings", Nothing, WorkerOptions::default())?;
/// workers.start_all()?;
///
/// workers.pause_all();
/// assert!(workers.wait_until_all_paused(Duration::from_secs(5)));
/// workers.resume_all();
///
/// let err = workers.pause("indexer").unwrap_err();
/// assert!(err.to_string().contains("known workers: summaries, embeddings"));
/// workers.stop_all(Duration::from_secs(5))?;
/// # Ok::<(), nu_coord::Error>(())
/// ```
#[derive(Clone)]
pub struct BackgroundWorkers {
    inner: Arc<Registry>,
}

struct Registry {
    counter: WorkerCounter,
    state: Mutex<RegistryState>,
}

#[derive(Default)]
struct RegistryState {
    workers: Vec<Arc<Worker>>,
    /// Set-wide holds in force; each worker carries this many gate holds.
    holds: usize,
}

impl BackgroundWorkers {
    /// Creates an empty set whose workers count against `counter`.
    pub fn new(counter: &WorkerCounter) -> Self {
        Self {
            inner: Arc::new(Registry {
                counter: counter.clone(),
                state: Mutex::new(RegistryState::default()),
            }),
        }
    }

    /// Adds a stopped worker named `name` running `task`.
    ///
    /// If a set-wide hold is in force (a safe state), the new worker is
    /// held paused with the others.
    ///
    /// # Errors
    ///
    /// [`Error::DuplicateWorker`] if the name is taken.
    pub fn register<T: BackgroundTask>(
        &self,
        name: impl Into<String>,
        task: T,
        options: WorkerOptions,
    ) -> Result<(), Error> {
        let name = name.into();
        let mut state = sync::lock(&self.inner.state);
        if state.workers.iter().any(|w| w.name() == name) {
            return Err(Error::DuplicateWorker { name });
        }
        let worker = Worker::new(name, task, &self.inner.counter, options);
        for _ in 0..state.holds {
            // Lifted one by one as the set-wide holds are dropped.
            worker.add_hold();
        }
        state.workers.push(Arc::new(worker));
        Ok(())
    }

    /// Returns the names of every worker, in registration order.
    pub fn names(&self) -> Vec<String> {
        self.snapshot()
            .iter()
            .map(|w| w.name().to_owned())
            .collect()
    }

    /// Returns the worker named `name`.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownWorker`], listing the known names.
    pub fn get(&self, name: &str) -> Result<Arc<Worker>, Error> {
        let state = sync::lock(&self.inner.state);
        state
            .workers
            .iter()
            .find(|w| w.name() == name)
            .cloned()
            .ok_or_else(|| Error::UnknownWorker {
                name: name.to_owned(),
                known: state.workers.iter().map(|w| w.name().to_owned()).collect(),
            })
    }

    fn snapshot(&self) -> Vec<Arc<Worker>> {
        sync::lock(&self.inner.state).workers.clone()
    }

    /// Starts every enabled worker that is not running.
    ///
    /// # Errors
    ///
    /// The first error from [`Worker::start`]; workers before it in
    /// registration order have been started.
    pub fn start_all(&self) -> Result<(), Error> {
        for worker in self.snapshot() {
            if worker.is_enabled() {
                worker.start()?;
            }
        }
        Ok(())
    }

    /// Starts one worker; see [`Worker::start`].
    ///
    /// # Errors
    ///
    /// [`Error::UnknownWorker`], or an error from [`Worker::start`].
    pub fn start(&self, name: &str) -> Result<bool, Error> {
        self.get(name)?.start()
    }

    /// Stops one worker, waiting up to `timeout`; see [`Worker::stop`].
    ///
    /// # Errors
    ///
    /// [`Error::UnknownWorker`] or [`Error::StopTimeout`].
    pub fn stop(&self, name: &str, timeout: Duration) -> Result<bool, Error> {
        self.get(name)?.stop(timeout)
    }

    /// Stops every worker under one deadline of `timeout`.
    ///
    /// Every worker is told to stop first, then each is waited for, so
    /// they all finish their units at the same time.
    ///
    /// # Errors
    ///
    /// [`Error::StopTimeout`] naming the first worker still running at the
    /// deadline. Every worker has been told to stop.
    pub fn stop_all(&self, timeout: Duration) -> Result<(), Error> {
        let workers = self.snapshot();
        for worker in &workers {
            worker.request_stop();
        }
        let deadline = sync::deadline_after(timeout);
        let mut first_error = None;
        for worker in &workers {
            if let Err(err) = worker.stop_until(deadline, timeout) {
                first_error.get_or_insert(err);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Allows one worker to start again; see [`Worker::enable`].
    ///
    /// # Errors
    ///
    /// [`Error::UnknownWorker`].
    pub fn enable(&self, name: &str) -> Result<bool, Error> {
        Ok(self.get(name)?.enable())
    }

    /// Stops and disables one worker; see [`Worker::disable`].
    ///
    /// # Errors
    ///
    /// [`Error::UnknownWorker`] or [`Error::StopTimeout`].
    pub fn disable(&self, name: &str, timeout: Duration) -> Result<bool, Error> {
        self.get(name)?.disable(timeout)
    }

    /// Switches one worker's own pause on; see [`Worker::pause`].
    ///
    /// # Errors
    ///
    /// [`Error::UnknownWorker`].
    pub fn pause(&self, name: &str) -> Result<bool, Error> {
        Ok(self.get(name)?.pause())
    }

    /// Switches one worker's own pause off; see [`Worker::resume`].
    ///
    /// # Errors
    ///
    /// [`Error::UnknownWorker`].
    pub fn resume(&self, name: &str) -> Result<bool, Error> {
        Ok(self.get(name)?.resume())
    }

    /// Switches every worker's own pause on. Returns how many were off.
    ///
    /// This is the user's kind of pause: it survives safe states taken and
    /// released meanwhile. Safe states use [`hold_all`](Self::hold_all).
    pub fn pause_all(&self) -> usize {
        self.snapshot().iter().filter(|w| w.pause()).count()
    }

    /// Switches every worker's own pause off. Returns how many were on.
    /// Workers held by a [`WorkersHold`] stay paused until it is dropped.
    pub fn resume_all(&self) -> usize {
        self.snapshot().iter().filter(|w| w.resume()).count()
    }

    /// Holds every worker, present and future, paused until the returned
    /// hold is dropped. Holds nest with each other and with the workers'
    /// own switches.
    pub fn hold_all(&self) -> WorkersHold {
        let mut state = sync::lock(&self.inner.state);
        state.holds += 1;
        for worker in &state.workers {
            worker.add_hold();
        }
        WorkersHold {
            registry: self.inner.clone(),
        }
    }

    /// Waits until every worker has parked under a requested pause, all
    /// under one deadline of `timeout`.
    ///
    /// A worker that is not running counts as parked once a pause is
    /// requested for it. Returns `false` if some worker has no pause
    /// requested or is still in a unit at the deadline;
    /// [`not_parked`](Self::not_parked) names them.
    pub fn wait_until_all_paused(&self, timeout: Duration) -> bool {
        self.wait_all_parked_until(sync::deadline_after(timeout))
            .is_empty()
    }

    /// Waits for every worker to park; returns the names of those that had
    /// not by `deadline`.
    pub(crate) fn wait_all_parked_until(&self, deadline: Option<Instant>) -> Vec<String> {
        let workers = self.snapshot();
        // One deadline for all: a slow worker shortens the others' waits,
        // and a worker that parks early costs nothing.
        let pending: Vec<String> = workers
            .iter()
            .filter(|w| !w.wait_parked_until(deadline))
            .map(|w| w.name().to_owned())
            .collect();
        pending
    }

    /// Returns the names of workers that are not (yet) parked under a
    /// requested pause.
    pub fn not_parked(&self) -> Vec<String> {
        self.snapshot()
            .iter()
            .filter(|w| !w.is_parked())
            .map(|w| w.name().to_owned())
            .collect()
    }

    /// Returns `true` if every worker has a pause requested (parked or
    /// not). An empty set is all paused.
    pub fn all_paused(&self) -> bool {
        self.snapshot().iter().all(|w| w.is_paused())
    }

    /// Returns `true` if every worker has parked under a requested pause.
    pub fn all_parked(&self) -> bool {
        self.snapshot().iter().all(|w| w.is_parked())
    }

    /// Tells one worker that new work may be waiting; see [`Worker::nudge`].
    ///
    /// # Errors
    ///
    /// [`Error::UnknownWorker`].
    pub fn nudge(&self, name: &str) -> Result<(), Error> {
        self.get(name)?.nudge();
        Ok(())
    }

    /// Returns a handle that nudges one worker; see [`Worker::nudger`].
    ///
    /// # Errors
    ///
    /// [`Error::UnknownWorker`].
    pub fn nudger(&self, name: &str) -> Result<Nudger, Error> {
        Ok(self.get(name)?.nudger())
    }

    /// Returns the status of one worker.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownWorker`].
    pub fn status(&self, name: &str) -> Result<WorkerStatus, Error> {
        Ok(self.get(name)?.status())
    }

    /// Returns the status of every worker, in registration order.
    pub fn statuses(&self) -> Vec<WorkerStatus> {
        self.snapshot().iter().map(|w| w.status()).collect()
    }

    /// Returns the counter the workers count against.
    pub fn counter(&self) -> &WorkerCounter {
        &self.inner.counter
    }
}

impl fmt::Debug for BackgroundWorkers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = sync::lock(&self.inner.state);
        f.debug_struct("BackgroundWorkers")
            .field("workers", &state.workers)
            .field("holds", &state.holds)
            .finish()
    }
}

/// Keeps every worker of a [`BackgroundWorkers`] paused, including workers
/// registered while it lives; dropping it lifts its share of the pause.
///
/// Returned by [`BackgroundWorkers::hold_all`].
#[must_use = "the workers resume as soon as the hold is dropped"]
pub struct WorkersHold {
    registry: Arc<Registry>,
}

impl fmt::Debug for WorkersHold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkersHold").finish_non_exhaustive()
    }
}

impl Drop for WorkersHold {
    fn drop(&mut self) {
        let mut state = sync::lock(&self.registry.state);
        state.holds -= 1;
        for worker in &state.workers {
            worker.release_hold();
        }
    }
}
