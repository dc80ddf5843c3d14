//! Work coordination for programs whose foreground work and background
//! work share one database, and that must be able to bring themselves to a
//! *safe state* on demand: no foreground work in flight, every background
//! worker parked at a checkpoint, no new work admitted. A backup, an
//! external editor or a migration then runs without anything interleaving.
//!
//! The parts, bottom up:
//!
//! - [`WorkerCounter`] counts active work per [`WorkerKind`] and wakes
//!   [`wait_for_idle`](WorkerCounter::wait_for_idle) the moment the last
//!   piece finishes.
//! - [`WorkerToken`] is one counted unit of work: released exactly once,
//!   by hand or on drop, whatever happens to the work. A pausable token
//!   carries a pause gate with [`check_pause`](WorkerToken::check_pause),
//!   whose fast path is one relaxed atomic load.
//! - [`BackgroundTask`] is background work done item by item, and
//!   [`Worker`] runs one on a named thread under a pausable token, with
//!   checkpoints, idle sleep, and a [`WorkerStatus`].
//! - [`BackgroundWorkers`] manages a program's workers by name.
//! - [`WorkCoordinator`] reaches safe states, returned as [`SafeState`]
//!   guards; dropping one ends it.
//! - [`CountsMirror`] (feature `sqlite`, on by default) copies the counts
//!   into a SQLite `metadata` table for other processes to read, from its
//!   own thread, so counting never waits on the disk.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use nu_coord::{
//!     BackgroundTask, BackgroundWorkers, Outcome, TaskError, Unit, WorkCoordinator,
//!     WorkerCounter, WorkerKind, WorkerOptions,
//! };
//!
//! // Background work: summarise a queue of texts, one per unit.
//! struct Summaries(Vec<String>);
//!
//! impl BackgroundTask for Summaries {
//!     type Item = String;
//!     fn next_item(&mut self, _: &Unit<'_>) -> Result<Option<String>, TaskError> {
//!         Ok(self.0.pop())
//!     }
//!     fn describe(&self, text: &String) -> String {
//!         format!("{} bytes", text.len())
//!     }
//!     fn run_item(&mut self, text: String, unit: &Unit<'_>) -> Result<Outcome, TaskError> {
//!         let first = text.split('.').next().unwrap_or_default().to_owned();
//!         // A safe point inside the unit: a pause may park here.
//!         let _ = unit.checkpoint();
//!         Ok(Outcome::new(first))
//!     }
//! }
//!
//! let counter = WorkerCounter::new();
//! let workers = BackgroundWorkers::new(&counter);
//! workers.register("summaries", Summaries(vec!["One. Two.".into()]), WorkerOptions::default())?;
//! workers.start_all()?;
//!
//! // Foreground work holds an orchestrator token while it runs.
//! let exchange = counter.token(WorkerKind::Orchestrator);
//! exchange.activate()?;
//! drop(exchange); // released, even on panic or early return
//!
//! // A backup: wait (up to 2 s in all) for a safe state, copy, then drop.
//! let coordinator = WorkCoordinator::new(&counter, &workers);
//! let safe = coordinator.prepare_for_backup(Duration::from_secs(2))?;
//! assert!(coordinator.status().parked);
//! // ... copy the database here ...
//! drop(safe); // workers resume, exchanges are admitted again
//!
//! workers.stop_all(Duration::from_secs(2))?;
//! # Ok::<(), nu_coord::Error>(())
//! ```
//!
//! # Semantics
//!
//! - **Paused means parked.** A pause only asks. A worker counts as paused
//!   once it is blocked at a checkpoint or is between units, never while
//!   inside one.
//! - **Waits are woken, not polled.** Every wait sleeps until the state
//!   change that satisfies it; a timeout is a deadline.
//! - **Holds compose.** Pauses and admission closures are holds; each is
//!   lifted by whoever took it, and work resumes when the last is gone. A
//!   failed prepare lifts only its own holds.
//! - **Counts never lie.** A token is uncounted exactly once; counts can
//!   not go negative.
//!
//! # What this crate does not promise
//!
//! - It does not stop code that never reaches a checkpoint. A unit of work
//!   that runs for a minute without calling [`Unit::checkpoint`] delays
//!   every safe state by up to a minute; the prepare's timeout bounds the
//!   wait, not the unit.
//! - It can not check what work does while it counts as parked: the
//!   closure given to [`Unit::parked`], and a unit winding down after a
//!   checkpoint reported [`Checkpoint::Shutdown`] during a pause, must not
//!   touch anything a safe state protects. That is a contract, not a check.
//! - The counts are per process. The database mirror lets other processes
//!   *read* them; it does not coordinate several writers.
//! - [`WorkerCounter::all_counts`] reads the kinds one after the other,
//!   not as one atomic snapshot.
//! - The library never logs and never prints; a panic inside a unit is
//!   caught and counted, but the process's panic hook still runs.

#![warn(missing_docs)]

mod coordinator;
mod counter;
mod error;
mod gate;
mod kind;
#[cfg(all(feature = "sqlite", not(loom)))]
mod mirror;
mod shutdown;
mod status;
mod sync;
mod task;
mod token;
mod worker;
mod workers;

/// The README's examples, compiled and run as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeExamples;

pub use coordinator::{CoordinatorStatus, Purpose, SafeState, WorkCoordinator};
pub use counter::{Admission, AdmissionHold, Counts, WorkerCounter};
pub use error::{Error, NotSafe};
pub use gate::Checkpoint;
pub use kind::{ParseKindError, Scope, WorkerKind};
#[cfg(all(feature = "sqlite", not(loom)))]
pub use mirror::{
    ensure_metadata_table, read_counts, CountsMirror, MIN_WRITE_INTERVAL, OWNER_PID_KEY,
    UPDATED_AT_KEY,
};
pub use shutdown::Shutdown;
pub use status::{DurationStats, WorkerState, WorkerStatus};
pub use task::{BackgroundTask, Outcome, TaskError, Unit};
pub use token::{PauseHold, UnitGuard, WorkerToken};
pub use worker::{Nudger, Worker, WorkerOptions};
pub use workers::{BackgroundWorkers, WorkersHold};
