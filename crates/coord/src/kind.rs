//! The kinds of work the library counts.

use std::fmt;
use std::str::FromStr;

/// What a [`WorkerToken`](crate::WorkerToken) stands for.
///
/// The two kinds are counted separately: a safe state waits for
/// orchestrators to finish and for background workers to park.
///
/// # Examples
///
/// ```
/// use nu_coord::WorkerKind;
///
/// let kind: WorkerKind = "background_worker".parse()?;
/// assert_eq!(kind, WorkerKind::BackgroundWorker);
/// assert_eq!(kind.to_string(), "background_worker");
///
/// let err = "daemon".parse::<WorkerKind>().unwrap_err();
/// assert!(err.to_string().contains("orchestrator, background_worker"));
/// # Ok::<(), nu_coord::ParseKindError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WorkerKind {
    /// Foreground work a user is waiting for, such as one exchange.
    Orchestrator,
    /// Work the program does on its own behalf, in a pausable runner.
    BackgroundWorker,
}

impl WorkerKind {
    /// Every kind, in the order counts are reported.
    pub const ALL: [WorkerKind; 2] = [WorkerKind::Orchestrator, WorkerKind::BackgroundWorker];

    /// Returns the kind's name as it is written in text and in the database.
    pub const fn as_str(self) -> &'static str {
        match self {
            WorkerKind::Orchestrator => "orchestrator",
            WorkerKind::BackgroundWorker => "background_worker",
        }
    }

    /// Returns the `metadata` key under which the kind's count is mirrored:
    /// `active_orchestrator_count` or `active_background_worker_count`.
    pub const fn metadata_key(self) -> &'static str {
        match self {
            WorkerKind::Orchestrator => "active_orchestrator_count",
            WorkerKind::BackgroundWorker => "active_background_worker_count",
        }
    }

    pub(crate) const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for WorkerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for WorkerKind {
    type Err = ParseKindError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        WorkerKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == s)
            .ok_or_else(|| ParseKindError {
                given: s.to_owned(),
            })
    }
}

/// The error for text that names no [`WorkerKind`].
///
/// Its message quotes the text and lists the valid kinds.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid worker kind {given:?}: must be one of: orchestrator, background_worker")]
pub struct ParseKindError {
    given: String,
}

impl ParseKindError {
    /// Returns the text that failed to parse.
    pub fn given(&self) -> &str {
        &self.given
    }
}

/// Which kinds a question about the counts covers.
///
/// Methods that take a scope accept a bare [`WorkerKind`] as well, through
/// `From`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Every kind.
    All,
    /// One kind only.
    Only(WorkerKind),
}

impl Scope {
    pub(crate) fn covers(self, kind: WorkerKind) -> bool {
        match self {
            Scope::All => true,
            Scope::Only(k) => k == kind,
        }
    }
}

impl From<WorkerKind> for Scope {
    fn from(kind: WorkerKind) -> Self {
        Scope::Only(kind)
    }
}
