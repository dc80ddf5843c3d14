//! The background task runner: a named thread that does a task's units of
//! work under a pausable background-worker token.
//!
//! # Life of a run
//!
//! `start` spawns the thread, which activates the token (counting one
//! background worker), parks, and loops: begin a unit (blocking while
//! paused), look for an item, do it, park. With nothing to do it sleeps on
//! its gate until nudged, resumed, stopped, or its idle interval passes.
//! Whatever ends the loop (shutdown, a bug that panics outside a unit), the
//! thread releases the token, hands the task back for a later `start`, and
//! signals that it has finished.
//!
//! Lock order: `control` is taken before the status cell and gate locks,
//! never after; the thread takes `control` only at exit, with no other lock.

use std::any::Any;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::thread;
use std::time::{Duration, Instant};

use crate::counter::WorkerCounter;
use crate::gate::Gate;
use crate::kind::WorkerKind;
use crate::shutdown::Shutdown;
use crate::status::{StatusCell, WorkerState, WorkerStatus};
use crate::sync::{self, Arc, Condvar, Mutex};
use crate::task::{BackgroundTask, Unit};
use crate::token::{PauseHold, WorkerToken};
use crate::Error;

/// Settings of a [`Worker`].
///
/// Start from `WorkerOptions::default()` and change what you need with
/// the builder methods; the fields can be read, and new ones may be added.
#[derive(Clone)]
#[non_exhaustive]
pub struct WorkerOptions {
    /// How long an idle worker sleeps before looking for work again when
    /// nothing wakes it. Work announced with [`Worker::nudge`] is picked up
    /// at once whatever this is. Default: 5 seconds.
    pub idle_interval: Duration,
    /// How long a worker waits before looking again after a failed
    /// look-up. Default: 1 second.
    pub retry_interval: Duration,
    /// Called on the worker's thread each time it starts, before any work:
    /// the place to lower the thread's priority, or to name it for a
    /// profiler. Default: none.
    pub on_thread_start: Option<std::sync::Arc<dyn Fn() + Send + Sync>>,
}

impl fmt::Debug for WorkerOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerOptions")
            .field("idle_interval", &self.idle_interval)
            .field("retry_interval", &self.retry_interval)
            .field("on_thread_start", &self.on_thread_start.is_some())
            .finish()
    }
}

impl Default for WorkerOptions {
    fn default() -> Self {
        Self {
            idle_interval: Duration::from_secs(5),
            retry_interval: Duration::from_secs(1),
            on_thread_start: None,
        }
    }
}

impl WorkerOptions {
    /// Sets [`idle_interval`](Self::idle_interval).
    pub fn idle_interval(mut self, interval: Duration) -> Self {
        self.idle_interval = interval;
        self
    }

    /// Sets [`on_thread_start`](Self::on_thread_start).
    pub fn on_thread_start(mut self, hook: impl Fn() + Send + Sync + 'static) -> Self {
        self.on_thread_start = Some(std::sync::Arc::new(hook));
        self
    }

    /// Sets [`retry_interval`](Self::retry_interval).
    pub fn retry_interval(mut self, interval: Duration) -> Self {
        self.retry_interval = interval;
        self
    }
}

/// Runs a [`BackgroundTask`] on its own named thread, under a pausable
/// background-worker token.
///
/// The worker counts as one active background worker while its thread
/// runs. [`pause`](Self::pause) asks it to stop between units (or at a
/// checkpoint inside one); [`wait_until_paused`](Self::wait_until_paused)
/// returns once it has. A unit that fails or panics is counted as failed
/// and the worker goes on.
///
/// Dropping a `Worker` asks its thread to stop but does not wait; call
/// [`stop`](Self::stop) to wait, bounded.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use nu_coord::{BackgroundTask, Outcome, TaskError, Unit, Worker, WorkerCounter, WorkerOptions};
///
/// struct Countdown(u32);
///
/// impl BackgroundTask for Countdown {
///     type Item = u32;
///     fn next_item(&mut self, _: &Unit<'_>) -> Result<Option<u32>, TaskError> {
///         Ok(self.0.checked_sub(1).map(|n| { self.0 = n; n }))
///     }
///     fn describe(&self, n: &u32) -> String { format!("step {n}") }
///     fn run_item(&mut self, n: u32, _: &Unit<'_>) -> Result<Outcome, TaskError> {
///         Ok(Outcome::new(format!("reached {n}")))
///     }
/// }
///
/// let counter = WorkerCounter::new();
/// let worker = Worker::new("countdown", Countdown(3), &counter, WorkerOptions::default());
/// worker.start()?;
/// worker.pause();
/// assert!(worker.wait_until_paused(Duration::from_secs(5)));
/// worker.resume();
/// worker.stop(Duration::from_secs(5))?;
/// assert_eq!(counter.active_count(nu_coord::WorkerKind::BackgroundWorker), 0);
/// # Ok::<(), nu_coord::Error>(())
/// ```
pub struct Worker {
    shared: Arc<Shared>,
}

struct Shared {
    name: String,
    token: WorkerToken,
    options: WorkerOptions,
    status: StatusCell,
    control: Mutex<Control>,
    /// Signalled (under `control`) when a run's thread finishes.
    finished: Condvar,
}

struct Control {
    /// The task, while no thread has it.
    task: Option<Box<dyn Runnable>>,
    run: Option<Run>,
    enabled: bool,
}

struct Run {
    shutdown: Shutdown,
    handle: Option<thread::JoinHandle<()>>,
    finished: bool,
}

/// The task with its item type erased, so runners of different tasks can
/// live side by side.
trait Runnable: Send {
    fn run_loop(&mut self, shared: &Shared, gate: &Gate, shutdown: &Shutdown);
}

struct Erased<T>(T);

impl<T: BackgroundTask> Runnable for Erased<T> {
    fn run_loop(&mut self, shared: &Shared, gate: &Gate, shutdown: &Shutdown) {
        let task = &mut self.0;
        let unit = Unit {
            name: &shared.name,
            gate,
            shutdown,
            status: &shared.status,
        };
        loop {
            if shutdown.is_requested() || !gate.begin_unit(Some(shutdown)) {
                return;
            }

            // Inside a unit from here to the matching `park`.
            let next = catch_unwind(AssertUnwindSafe(|| task.next_item(&unit)));
            let item = match next {
                Ok(Ok(Some(item))) => item,
                Ok(Ok(None)) => {
                    gate.park();
                    gate.idle(
                        Some(shutdown),
                        sync::deadline_after(shared.options.idle_interval),
                    );
                    continue;
                }
                Ok(Err(err)) => {
                    let message = format!("looking for work: {err}");
                    retry_later(shared, gate, shutdown, message);
                    continue;
                }
                Err(panic) => {
                    let message = format!("looking for work panicked: {}", panic_message(&*panic));
                    retry_later(shared, gate, shutdown, message);
                    continue;
                }
            };

            let label = catch_unwind(AssertUnwindSafe(|| task.describe(&item)))
                .unwrap_or_else(|_| "an item whose description panicked".to_owned());
            shared.status.start_item(label);
            let started = Instant::now();
            let result = catch_unwind(AssertUnwindSafe(|| task.run_item(item, &unit)));
            let took = started.elapsed();
            let record = match result {
                Ok(Ok(outcome)) => Ok((outcome.summary, outcome.cost)),
                Ok(Err(err)) => Err(err.to_string()),
                Err(panic) => Err(format!("panicked: {}", panic_message(&*panic))),
            };
            gate.park();
            shared.status.finish_item(record, took);
        }
    }
}

/// After a failed look-up: park, say what went wrong, and wait the retry
/// interval (or less, if woken) before looking again.
fn retry_later(shared: &Shared, gate: &Gate, shutdown: &Shutdown, message: String) {
    gate.park();
    shared.status.note_failure(message);
    gate.idle(
        Some(shutdown),
        sync::deadline_after(shared.options.retry_interval),
    );
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with no message".to_owned()
    }
}

impl Worker {
    /// Creates a stopped worker for `task`, named `name`, counting against
    /// `counter` while it runs.
    pub fn new<T: BackgroundTask>(
        name: impl Into<String>,
        task: T,
        counter: &WorkerCounter,
        options: WorkerOptions,
    ) -> Self {
        let name = name.into();
        let token = WorkerToken::pausable(counter, WorkerKind::BackgroundWorker)
            .named(name.clone())
            .bypassing_admission();
        Self {
            shared: Arc::new(Shared {
                name,
                token,
                options,
                status: StatusCell::default(),
                control: Mutex::new(Control {
                    task: Some(Box::new(Erased(task))),
                    run: None,
                    enabled: true,
                }),
                finished: Condvar::new(),
            }),
        }
    }

    /// Returns the worker's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Starts the worker's thread. Returns `Ok(false)` if it was already
    /// running.
    ///
    /// A pause requested before the start stays in force: the worker
    /// counts as parked from the start and does no work until resumed.
    ///
    /// # Errors
    ///
    /// [`Error::Disabled`] if the worker is disabled,
    /// [`Error::StillStopping`] if a previous run has been told to stop and
    /// has not finished, [`Error::Spawn`] if no thread could be started.
    pub fn start(&self) -> Result<bool, Error> {
        let mut control = sync::lock(&self.shared.control);
        if !control.enabled {
            return Err(Error::Disabled {
                name: self.shared.name.clone(),
            });
        }
        if let Some(run) = &mut control.run {
            if !run.finished {
                if run.shutdown.is_requested() {
                    return Err(Error::StillStopping {
                        name: self.shared.name.clone(),
                    });
                }
                return Ok(false);
            }
            if let Some(handle) = run.handle.take() {
                // The thread has signalled that it finished, so this join
                // returns at once.
                let _ = handle.join();
            }
            control.run = None;
        }
        let shutdown = Shutdown::new();
        let shared = self.shared.clone();
        let thread_shutdown = shutdown.clone();
        // The token is activated here, before the thread exists, so the
        // count is right the moment `start` returns.
        // Runners bypass admission, so this can not be refused.
        self.shared.token.activate()?;
        let spawned = thread::Builder::new()
            .name(self.shared.name.clone())
            .spawn(move || thread_main(shared, thread_shutdown));
        match spawned {
            Ok(handle) => {
                control.run = Some(Run {
                    shutdown,
                    handle: Some(handle),
                    finished: false,
                });
                Ok(true)
            }
            Err(source) => {
                // Nothing ran and the task is still in `control`: undo the
                // activation and the worker is as it was.
                self.shared.token.release();
                Err(Error::Spawn {
                    name: self.shared.name.clone(),
                    source,
                })
            }
        }
    }

    /// Tells the worker to stop and waits up to `timeout` for its thread to
    /// finish. Returns `Ok(false)` if it was not running.
    ///
    /// A paused worker stops at once; a worker inside a unit stops at its
    /// next checkpoint or when the unit ends.
    ///
    /// # Errors
    ///
    /// [`Error::StopTimeout`] if the thread is still finishing a unit when
    /// the timeout passes. It has been told to stop and will.
    pub fn stop(&self, timeout: Duration) -> Result<bool, Error> {
        self.stop_until(sync::deadline_after(timeout), timeout)
    }

    pub(crate) fn stop_until(
        &self,
        deadline: Option<Instant>,
        timeout: Duration,
    ) -> Result<bool, Error> {
        let mut control = sync::lock(&self.shared.control);
        let Some(run) = &control.run else {
            return Ok(false);
        };
        if run.finished {
            control.run = None;
            return Ok(false);
        }
        run.shutdown.request();
        loop {
            if control.run.as_ref().is_some_and(|run| run.finished) {
                let mut run = control.run.take().expect("checked above");
                if let Some(handle) = run.handle.take() {
                    let _ = handle.join();
                }
                return Ok(true);
            }
            let (c, waited) = sync::wait_until(&self.shared.finished, control, deadline);
            control = c;
            if !waited && !control.run.as_ref().is_some_and(|run| run.finished) {
                return Err(Error::StopTimeout {
                    name: self.shared.name.clone(),
                    timeout,
                });
            }
        }
    }

    /// Asks the worker to stop without waiting.
    pub fn request_stop(&self) {
        if let Some(run) = &sync::lock(&self.shared.control).run {
            run.shutdown.request();
        }
    }

    /// Returns `true` while the worker's thread is alive.
    pub fn is_running(&self) -> bool {
        sync::lock(&self.shared.control)
            .run
            .as_ref()
            .is_some_and(|run| !run.finished)
    }

    /// Allows the worker to start again. Returns `true` if it was disabled.
    /// Does not start it.
    pub fn enable(&self) -> bool {
        let mut control = sync::lock(&self.shared.control);
        !std::mem::replace(&mut control.enabled, true)
    }

    /// Stops the worker (waiting up to `timeout`) and keeps it from
    /// starting until enabled. Returns `Ok(true)` if it was enabled.
    ///
    /// # Errors
    ///
    /// [`Error::StopTimeout`] as for [`stop`](Self::stop); the worker is
    /// disabled all the same and stops at its next checkpoint.
    pub fn disable(&self, timeout: Duration) -> Result<bool, Error> {
        let was = std::mem::replace(&mut sync::lock(&self.shared.control).enabled, false);
        self.stop(timeout)?;
        Ok(was)
    }

    /// Returns `true` unless the worker is disabled.
    pub fn is_enabled(&self) -> bool {
        sync::lock(&self.shared.control).enabled
    }

    /// Switches the worker's own pause on. Returns `true` if it was off.
    ///
    /// The worker parks at its next checkpoint or when its current unit
    /// ends. This switch is one pause among others: it stays on through
    /// any safe state taken and released meanwhile.
    pub fn pause(&self) -> bool {
        self.gate().pause()
    }

    /// Switches the worker's own pause off. Returns `true` if it was on.
    /// The worker goes on only if no hold remains.
    pub fn resume(&self) -> bool {
        self.gate().resume()
    }

    /// Keeps the worker paused until the returned hold is dropped.
    pub fn hold_pause(&self) -> PauseHold {
        PauseHold::on(self.gate())
    }

    /// Adds a gate hold without a guard; paired with `release_hold` by the
    /// set-wide holds of `BackgroundWorkers`.
    pub(crate) fn add_hold(&self) {
        self.gate().add_hold();
    }

    pub(crate) fn release_hold(&self) {
        self.gate().remove_hold();
    }

    /// Returns `true` while a pause is requested, parked or not.
    pub fn is_paused(&self) -> bool {
        self.gate().is_requested()
    }

    /// Returns `true` if a pause is requested and the worker has parked.
    pub fn is_parked(&self) -> bool {
        self.gate().is_paused_and_parked()
    }

    /// Waits up to `timeout` for a requested pause to take effect.
    ///
    /// Returns `false` at once if no pause is requested; see
    /// [`WorkerToken::wait_until_paused`].
    pub fn wait_until_paused(&self, timeout: Duration) -> bool {
        self.gate().wait_parked(sync::deadline_after(timeout))
    }

    pub(crate) fn wait_parked_until(&self, deadline: Option<Instant>) -> bool {
        self.gate().wait_parked(deadline)
    }

    /// Tells the worker that new work may be waiting: an idle worker looks
    /// at once, a busy one looks again before it sleeps.
    pub fn nudge(&self) {
        self.gate().nudge();
    }

    /// Returns a handle that nudges this worker from anywhere, without
    /// keeping the worker (or its set) alive.
    pub fn nudger(&self) -> Nudger {
        Nudger {
            gate: self.gate().clone(),
        }
    }

    /// Returns a snapshot of the worker's status.
    pub fn status(&self) -> WorkerStatus {
        let (enabled, running, stopping) = {
            let control = sync::lock(&self.shared.control);
            let running = control.run.as_ref().is_some_and(|run| !run.finished);
            let stopping = control
                .run
                .as_ref()
                .is_some_and(|run| !run.finished && run.shutdown.is_requested());
            (control.enabled, running, stopping)
        };
        let gate = self.gate();
        let paused = gate.is_requested();
        let in_unit = gate.is_running();
        let (data, durations) = self.shared.status.snapshot();
        let state = if stopping {
            WorkerState::Stopping
        } else if !running {
            if enabled {
                WorkerState::Stopped
            } else {
                WorkerState::Disabled
            }
        } else if paused {
            if in_unit {
                WorkerState::Pausing
            } else {
                WorkerState::Paused
            }
        } else if in_unit {
            WorkerState::Running
        } else {
            WorkerState::Idle
        };
        WorkerStatus {
            name: self.shared.name.clone(),
            state,
            enabled,
            running,
            paused,
            total: data.completed + data.failed + u64::from(data.current.is_some()),
            completed: data.completed,
            failed: data.failed,
            current: data.current,
            last_result: data.last_result,
            backlog: data.backlog,
            spend: data.spend,
            durations,
        }
    }

    fn gate(&self) -> &Gate {
        self.shared
            .token
            .gate_inner()
            .expect("a worker's token is pausable")
    }
}

/// The body of a worker's thread; see the module doc.
fn thread_main(shared: Arc<Shared>, shutdown: Shutdown) {
    // `start` holds `control` until the run is recorded, so the task is
    // taken only once the spawn has succeeded; a failed spawn leaves it in
    // place.
    let Some(mut task) = sync::lock(&shared.control).task.take() else {
        unreachable!("a stopped worker always has its task back");
    };
    let gate = shared
        .token
        .gate_inner()
        .expect("a worker's token is pausable")
        .clone();
    // Between units the worker counts as parked.
    gate.park();
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        if let Some(hook) = &shared.options.on_thread_start {
            hook();
        }
        task.run_loop(&shared, &gate, &shutdown);
    }));
    if let Err(panic) = outcome {
        // Units catch their own panics, so this is a bug in the loop itself;
        // keep the worker usable and say what happened.
        shared
            .status
            .note_failure(format!("worker loop panicked: {}", panic_message(&*panic)));
    }
    shared.token.release();
    let mut control = sync::lock(&shared.control);
    control.task = Some(task);
    if let Some(run) = &mut control.run {
        run.finished = true;
    }
    shared.finished.notify_all();
}

/// Tells one worker that new work may be waiting; see [`Worker::nudge`].
///
/// Cheap to clone and to keep: it holds the worker's pause gate only, so a
/// task can hold a nudger for another worker (a summarizer waking the
/// embedder, say) without a reference cycle.
#[derive(Clone)]
pub struct Nudger {
    gate: Gate,
}

impl Nudger {
    /// Nudges the worker.
    pub fn nudge(&self) {
        self.gate.nudge();
    }
}

impl fmt::Debug for Nudger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Nudger").finish_non_exhaustive()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.request_stop();
    }
}

impl fmt::Debug for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let gate = self.gate();
        f.debug_struct("Worker")
            .field("name", &self.shared.name)
            .field("paused", &gate.is_requested())
            .field("in_unit", &gate.is_running())
            .finish_non_exhaustive()
    }
}
