//! The library's one error type.

use std::fmt;
use std::time::Duration;

use crate::kind::WorkerKind;

/// Everything that can go wrong in this library.
///
/// Timed waits that simply run out (`wait_for_idle`, `wait_until_paused`)
/// return `false` instead; an error means a request could not be honoured.
/// A failed request leaves the state as it was found, with two stated
/// exceptions: [`Worker::disable`](crate::Worker::disable) disables the
/// worker even when its stop times out, and
/// [`BackgroundWorkers::start_all`](crate::BackgroundWorkers::start_all) leaves started the workers it reached
/// before the failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `pause` or `resume` on a token without a pause gate.
    #[error("worker {name} is not pausable")]
    NotPausable {
        /// The token's name.
        name: String,
    },

    /// A token asked to become active while a safe state keeps admission
    /// for its kind closed.
    #[error("new {kind} work is not admitted while a safe state is held; try again when it ends")]
    AdmissionClosed {
        /// The kind that was refused.
        kind: WorkerKind,
    },

    /// A worker name that no worker has.
    #[error("unknown worker {name:?}; known workers: {}", list(known))]
    UnknownWorker {
        /// The name asked for.
        name: String,
        /// Every registered name, in registration order.
        known: Vec<String>,
    },

    /// A second worker registered under a name already taken.
    #[error("a worker named {name:?} is already registered; choose another name")]
    DuplicateWorker {
        /// The name that is taken.
        name: String,
    },

    /// `start` on a worker that is disabled.
    #[error("worker {name} is disabled; enable it before starting it")]
    Disabled {
        /// The worker's name.
        name: String,
    },

    /// A worker asked to stop did not finish in time; it has been told to
    /// stop and will exit at its next checkpoint.
    #[error(
        "worker {name} did not stop within {timeout:?}: it is still inside a unit \
         of work and will stop at its next checkpoint"
    )]
    StopTimeout {
        /// The worker's name.
        name: String,
        /// How long the stop waited.
        timeout: Duration,
    },

    /// `start` on a worker whose previous run was told to stop and has not
    /// finished yet.
    #[error("worker {name} is still stopping; start it again once it has stopped")]
    StillStopping {
        /// The worker's name.
        name: String,
    },

    /// The operating system refused to start a thread.
    #[error("could not start a thread for {name}: {source}")]
    Spawn {
        /// The thread's name: a worker's, or the mirror's.
        name: String,
        /// What the operating system said.
        source: std::io::Error,
    },

    /// A safe state could not be reached within the timeout.
    #[error(transparent)]
    NotSafe(#[from] NotSafe),

    /// The counter already feeds a [`CountsMirror`](crate::CountsMirror).
    #[error("this counter is already mirrored into a database; one mirror per counter")]
    AlreadyMirrored,

    /// The counts mirror's last write failed; it keeps retrying.
    #[error("the counts mirror could not write the counts: {message}")]
    MirrorWrite {
        /// What the database said.
        message: String,
    },

    /// The database behind the counts mirror failed.
    #[cfg(feature = "sqlite")]
    #[error("counts mirror database: {0}")]
    Database(#[from] rusqlite::Error),
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "(none)".to_owned()
    } else {
        names.join(", ")
    }
}

/// Why a [`WorkCoordinator`](crate::WorkCoordinator) could not reach a safe
/// state: what it was still waiting on when its one deadline passed.
///
/// By the time this is returned, everything the attempt did has been undone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotSafe {
    pub(crate) purpose: crate::Purpose,
    pub(crate) timeout: Duration,
    pub(crate) orchestrators: usize,
    pub(crate) workers_in_unit: Vec<String>,
}

impl NotSafe {
    /// Returns what the safe state was for.
    pub fn purpose(&self) -> crate::Purpose {
        self.purpose
    }

    /// Returns the timeout the attempt had.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Returns how many orchestrators were still running at the deadline.
    pub fn orchestrators(&self) -> usize {
        self.orchestrators
    }

    /// Returns the workers that were still inside a unit of work.
    pub fn workers_in_unit(&self) -> &[String] {
        &self.workers_in_unit
    }
}

impl std::error::Error for NotSafe {}

impl fmt::Display for NotSafe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "could not reach a safe state for {} within {:?}: ",
            self.purpose, self.timeout
        )?;
        let mut parts = Vec::new();
        if self.orchestrators > 0 {
            let noun = if self.orchestrators == 1 {
                "exchange"
            } else {
                "exchanges"
            };
            parts.push(format!("{} {noun} still running", self.orchestrators));
        }
        for name in &self.workers_in_unit {
            parts.push(format!("{name}: still in a unit of work"));
        }
        if parts.is_empty() {
            // Everything settled just as the deadline passed.
            parts.push("it settled only as the deadline passed; try again".to_owned());
        }
        write!(f, "{}", parts.join("; "))?;
        write!(f, ". Nothing was changed")
    }
}
