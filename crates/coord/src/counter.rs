//! Live counts of active work per kind, with idle waits and admission.
//!
//! # Encoding
//!
//! Each kind has one 64-bit word:
//!
//! - bits 0..32: the number of active tokens of that kind;
//! - bits 32..63: the number of admission holds (safe states that have
//!   closed admission for the kind);
//! - bit 63, `WAITERS`: some thread is blocked waiting for the kind to go
//!   idle.
//!
//! Keeping all three in one word makes each decision a single atomic
//! operation on one location. "Admission is open, so count me" is one
//! compare-exchange: once a safe state has closed admission, no token can
//! slip in between the check and the increment. And the release that
//! brings a count to zero learns from the value its own decrement returns
//! whether anyone waits, so the release path is one read-modify-write with
//! no lock, and no second location to read.
//!
//! # Invariants
//!
//! 1. The count only goes up through [`CounterInner::try_enter`] and only
//!    down through [`CounterInner::leave`], and a token calls `leave` only
//!    after a successful enter, exactly once. So the count is the number of
//!    active tokens and can not go below zero.
//! 2. A waiter sets `WAITERS` (a read-modify-write) while holding the lock,
//!    and only then reads the count. A release that brings the count to
//!    zero after that read is later in the word's modification order, so
//!    its decrement returns a value with `WAITERS` set, and it notifies
//!    under the lock. The waiter holds the lock from its read until it
//!    sleeps, so the notify finds it asleep: no lost wake-up. The last
//!    waiter to leave clears `WAITERS`, under the lock.
//!
//! Lock order: the counter's lock is a leaf; nothing else is locked while
//! it is held.

use std::fmt;
use std::time::{Duration, Instant};

use crate::kind::{Scope, WorkerKind};
use crate::sync::{self, Arc, AtomicU64, Condvar, Mutex, Ordering};
use crate::token::WorkerToken;
use crate::Error;

const COUNT_MASK: u64 = 0xFFFF_FFFF;
const HOLD_ONE: u64 = 1 << 32;
const WAITERS: u64 = 1 << 63;
const HOLD_MASK: u64 = !COUNT_MASK & !WAITERS;

fn holds(word: u64) -> u64 {
    (word & HOLD_MASK) >> 32
}

/// How a token asks to become active while admission may be closed.
///
/// A [`SafeState`](crate::SafeState) closes admission for orchestrators:
/// nothing new starts half-way into a backup. Callers choose whether to be
/// refused at once or to wait, bounded, for the safe state to end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Fails at once with [`Error::AdmissionClosed`] while admission is closed.
    Refuse,
    /// Waits up to this long for admission to reopen, then fails with
    /// [`Error::AdmissionClosed`].
    Wait(Duration),
}

/// A snapshot of the active counts of every kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Counts {
    /// Active orchestrator tokens.
    pub orchestrators: usize,
    /// Active background-worker tokens.
    pub background_workers: usize,
}

impl Counts {
    /// Returns the count for one kind.
    pub fn get(&self, kind: WorkerKind) -> usize {
        match kind {
            WorkerKind::Orchestrator => self.orchestrators,
            WorkerKind::BackgroundWorker => self.background_workers,
        }
    }

    /// Returns the sum over every kind.
    pub fn total(&self) -> usize {
        self.orchestrators + self.background_workers
    }
}

/// Live counts of active [`WorkerToken`]s, per [`WorkerKind`].
///
/// A counter is a cheap handle: clones share the same counts. Activating and
/// releasing a token are a few atomic operations, with no lock and no I/O;
/// a [`CountsMirror`](crate::CountsMirror) copies the counts to a database
/// from its own thread.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use nu_coord::{Scope, WorkerCounter, WorkerKind};
///
/// let counter = WorkerCounter::new();
/// let token = counter.token(WorkerKind::Orchestrator);
/// token.activate()?;
/// assert_eq!(counter.active_count(WorkerKind::Orchestrator), 1);
/// assert!(counter.any_active(Scope::All));
///
/// std::thread::spawn(move || drop(token));
/// assert!(counter.wait_for_idle(WorkerKind::Orchestrator, Duration::from_secs(5)));
/// # Ok::<(), nu_coord::Error>(())
/// ```
#[derive(Clone, Default)]
pub struct WorkerCounter {
    pub(crate) inner: Arc<CounterInner>,
}

#[derive(Default)]
pub(crate) struct CounterInner {
    /// One word per kind, indexed by `WorkerKind::index`; see the module doc.
    words: [AtomicU64; 2],
    /// Threads blocked in an idle wait, per kind; `WAITERS` is set in a
    /// kind's word while its entry here is not zero (invariant 2).
    lock: Mutex<[usize; 2]>,
    cv: Condvar,
    /// Set once when a mirror attaches; told about every change.
    #[cfg(not(loom))]
    pub(crate) changes: std::sync::OnceLock<ChangeSignal>,
}

impl WorkerCounter {
    /// Creates a counter with every count at zero and admission open.
    pub fn new() -> Self {
        Self::default()
    }

    /// Creates a token of `kind` that counts against this counter.
    ///
    /// This is [`WorkerToken::new`] spelled from the counter's side.
    pub fn token(&self, kind: WorkerKind) -> WorkerToken {
        WorkerToken::new(self, kind)
    }

    /// Returns the number of active tokens of `kind`.
    pub fn active_count(&self, kind: WorkerKind) -> usize {
        self.inner.count(kind)
    }

    /// Returns the active count of every kind.
    ///
    /// The two counts are read one after the other, not atomically together.
    pub fn all_counts(&self) -> Counts {
        Counts {
            orchestrators: self.inner.count(WorkerKind::Orchestrator),
            background_workers: self.inner.count(WorkerKind::BackgroundWorker),
        }
    }

    /// Returns `true` if any token in `scope` is active.
    pub fn any_active(&self, scope: impl Into<Scope>) -> bool {
        !self.inner.idle(scope.into())
    }

    /// Returns `true` if no token in `scope` is active.
    pub fn is_idle(&self, scope: impl Into<Scope>) -> bool {
        self.inner.idle(scope.into())
    }

    /// Waits until no token in `scope` is active, for at most `timeout`.
    ///
    /// Returns `true` at once if the scope is already idle, and `false` if
    /// the timeout passes first. The wait is woken by the release that
    /// brings the count to zero; it does not poll.
    pub fn wait_for_idle(&self, scope: impl Into<Scope>, timeout: Duration) -> bool {
        self.inner
            .wait_idle(scope.into(), sync::deadline_after(timeout))
    }

    /// Closes admission for `kind` until the returned hold is dropped.
    ///
    /// While any hold exists, activating a token of `kind` is refused or
    /// waits, as its [`Admission`] asks. Tokens already active are not
    /// affected. Holds nest: admission reopens when the last one is dropped.
    ///
    /// [`WorkCoordinator`](crate::WorkCoordinator) takes one of these for
    /// orchestrators as part of every safe state; most programs need not
    /// call this directly.
    pub fn close_admission(&self, kind: WorkerKind) -> AdmissionHold {
        self.inner.word(kind).fetch_add(HOLD_ONE, Ordering::SeqCst);
        AdmissionHold {
            counter: self.clone(),
            kind,
        }
    }

    /// Returns `true` if tokens of `kind` are admitted now.
    pub fn is_admitting(&self, kind: WorkerKind) -> bool {
        holds(self.inner.word(kind).load(Ordering::SeqCst)) == 0
    }
}

impl fmt::Debug for WorkerCounter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let counts = self.all_counts();
        f.debug_struct("WorkerCounter")
            .field("orchestrators", &counts.orchestrators)
            .field("background_workers", &counts.background_workers)
            .field(
                "admitting_orchestrators",
                &self.is_admitting(WorkerKind::Orchestrator),
            )
            .finish()
    }
}

/// Keeps admission closed for one kind; dropping it reopens admission
/// unless another hold remains.
///
/// Returned by [`WorkerCounter::close_admission`].
#[must_use = "admission reopens as soon as the hold is dropped"]
pub struct AdmissionHold {
    counter: WorkerCounter,
    kind: WorkerKind,
}

impl AdmissionHold {
    /// Returns the kind whose admission this hold keeps closed.
    pub fn kind(&self) -> WorkerKind {
        self.kind
    }
}

impl fmt::Debug for AdmissionHold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdmissionHold")
            .field("kind", &self.kind)
            .finish()
    }
}

impl Drop for AdmissionHold {
    fn drop(&mut self) {
        let inner = &self.counter.inner;
        let prev = inner.word(self.kind).fetch_sub(HOLD_ONE, Ordering::SeqCst);
        debug_assert!(holds(prev) != 0, "admission hold released twice");
        if holds(prev) == 1 {
            // This was the last hold: wake any token waiting for admission.
            // Reopening is rare, so notify under the lock unconditionally.
            inner.notify_waiters();
        }
    }
}

impl CounterInner {
    fn word(&self, kind: WorkerKind) -> &AtomicU64 {
        &self.words[kind.index()]
    }

    fn count(&self, kind: WorkerKind) -> usize {
        (self.word(kind).load(Ordering::SeqCst) & COUNT_MASK) as usize
    }

    fn idle(&self, scope: Scope) -> bool {
        WorkerKind::ALL
            .into_iter()
            .filter(|&kind| scope.covers(kind))
            .all(|kind| self.count(kind) == 0)
    }

    /// Counts one more active token of `kind` if admission allows it.
    ///
    /// `bypass` skips the admission check; background runners use it, since
    /// they park at their first checkpoint instead of being refused.
    #[inline]
    pub(crate) fn try_enter(
        &self,
        kind: WorkerKind,
        admission: Admission,
        bypass: bool,
    ) -> Result<(), Error> {
        let word = self.word(kind);
        let mut current = word.load(Ordering::Relaxed);
        loop {
            if holds(current) != 0 && !bypass {
                return self.enter_when_admitted(kind, admission);
            }
            assert!(
                current & COUNT_MASK < COUNT_MASK,
                "too many active {kind} tokens"
            );
            // SeqCst: pairs with the mirror's read of the words after it
            // clears its dirty flag (see `ChangeSignal`).
            match word.compare_exchange_weak(
                current,
                current + 1,
                Ordering::SeqCst,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(actual) => current = actual,
            }
        }
        self.changed();
        Ok(())
    }

    #[cold]
    fn enter_when_admitted(&self, kind: WorkerKind, admission: Admission) -> Result<(), Error> {
        let deadline = match admission {
            Admission::Refuse => return Err(Error::AdmissionClosed { kind }),
            Admission::Wait(timeout) => sync::deadline_after(timeout),
        };
        let word = self.word(kind);
        let mut guard = sync::lock(&self.lock);
        // Hold drops notify under the lock unconditionally, and we read the
        // word while holding it, so no wake-up is lost here.
        let result = loop {
            let current = word.load(Ordering::SeqCst);
            if holds(current) == 0 {
                // Admission is open: try to count ourselves. The exchange
                // can fail if the count moved or a hold arrived; loop.
                if word
                    .compare_exchange(current, current + 1, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
                {
                    break Ok(());
                }
                continue;
            }
            let (g, waited) = sync::wait_until(&self.cv, guard, deadline);
            guard = g;
            if !waited {
                break Err(Error::AdmissionClosed { kind });
            }
        };
        drop(guard);
        if result.is_ok() {
            self.changed();
        }
        result
    }

    /// Uncounts one active token of `kind`. Called once per successful enter.
    #[inline]
    pub(crate) fn leave(&self, kind: WorkerKind) {
        // The value before the decrement tells both whether this was the
        // last token and whether anyone waits (invariant 2).
        let prev = self.word(kind).fetch_sub(1, Ordering::SeqCst);
        debug_assert!(prev & COUNT_MASK != 0, "{kind} count went below zero");
        if prev & (COUNT_MASK | WAITERS) == WAITERS | 1 {
            self.notify_waiters();
        }
        self.changed();
    }

    #[cold]
    fn notify_waiters(&self) {
        // Taking the lock orders this notify after any waiter's check of
        // the words: a waiter holds the lock from its check until it sleeps.
        // Notifying after unlocking spares the woken waiter from blocking
        // on a lock we still hold.
        drop(sync::lock(&self.lock));
        self.cv.notify_all();
    }

    pub(crate) fn wait_idle(&self, scope: Scope, deadline: Option<Instant>) -> bool {
        if self.idle(scope) {
            return true;
        }
        let mut waiters = sync::lock(&self.lock);
        let kinds = || WorkerKind::ALL.into_iter().filter(|&k| scope.covers(k));
        for kind in kinds() {
            waiters[kind.index()] += 1;
            if waiters[kind.index()] == 1 {
                self.word(kind).fetch_or(WAITERS, Ordering::SeqCst);
            }
        }
        let idle = loop {
            // These reads come after our `fetch_or` on each word, so they
            // see every release that could have missed the flag.
            if self.idle(scope) {
                break true;
            }
            let (w, waited) = sync::wait_until(&self.cv, waiters, deadline);
            waiters = w;
            if !waited {
                break self.idle(scope);
            }
        };
        for kind in kinds() {
            waiters[kind.index()] -= 1;
            if waiters[kind.index()] == 0 {
                self.word(kind).fetch_and(!WAITERS, Ordering::SeqCst);
            }
        }
        idle
    }

    #[inline]
    fn changed(&self) {
        #[cfg(not(loom))]
        if let Some(signal) = self.changes.get() {
            signal.notify();
        }
    }
}

/// Tells one listening thread (the database mirror) that the counts moved.
///
/// The hot path reads `dirty` and only when it is clear swaps it and
/// unparks the listener, so under steady activity each change costs one
/// plain load: the listener clears the flag at most once per write.
#[cfg(not(loom))]
pub(crate) struct ChangeSignal {
    pub(crate) dirty: std::sync::atomic::AtomicBool,
    pub(crate) listener: std::thread::Thread,
}

#[cfg(not(loom))]
impl ChangeSignal {
    #[inline]
    fn notify(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        // SeqCst pairs with the listener's `dirty.swap(false)` followed by
        // its read of the words: if the listener read a count from before
        // our change, its clear came before our load here in the single
        // SeqCst order, so we see `false` and wake it again.
        if !self.dirty.load(SeqCst) && !self.dirty.swap(true, SeqCst) {
            self.listener.unpark();
        }
    }
}
