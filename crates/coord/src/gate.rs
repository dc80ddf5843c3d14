//! The pause gate behind every pausable token: the state machine that says
//! whether a pause is asked for and whether the owner has parked.
//!
//! # Encoding
//!
//! One word, `state`:
//!
//! - bit 0, `RUNNING`: the owner is doing work. It is set when the owner
//!   starts work (activation, entering a unit, leaving a checkpoint) and
//!   cleared when the owner parks (ending a unit, blocking in a checkpoint,
//!   release). *Parked* means `RUNNING` is clear.
//! - bit 1, `MANUAL`: the plain `pause`/`resume` switch of the token.
//! - bits 2 and up: the number of pause holds ([`crate::PauseHold`]).
//!
//! A pause is *requested* while `MANUAL` is set or any hold exists. A
//! worker is *paused* in the sense of DESIGN's "paused means parked" when a
//! pause is requested and it is parked.
//!
//! # Invariants
//!
//! 1. `RUNNING` is only ever set by a compare-exchange that sees no pause
//!    requested (`try_run`): on activation, when a unit begins, and at a
//!    checkpoint of an active owner once no pause is requested. So once an observer has seen
//!    "requested and parked", the owner stays parked until the request is
//!    lifted: every transition is a read-modify-write on the one word, and
//!    they are totally ordered. A checkpoint left because of shutdown
//!    leaves the owner parked.
//! 2. Every change that can satisfy a blocked wait is followed by taking
//!    `lock` and notifying, and every blocked wait re-reads `state` while
//!    holding `lock` before it sleeps. So a notify can not fall between a
//!    waiter's check and its sleep: no lost wake-ups.
//! 3. Wakers notify only when someone waits (the counts in `Waits`), so a
//!    pause of an idle worker costs no system call.
//!
//! Lock order: a shutdown's listener lock is never held while a gate lock
//! is taken, and a gate lock is a leaf.

use std::time::Instant;

use crate::shutdown::Shutdown;
use crate::sync::{self, Arc, AtomicUsize, Condvar, Mutex, Ordering};

const RUNNING: usize = 1;
const MANUAL: usize = 2;
const HOLD_ONE: usize = 4;

fn requested(state: usize) -> bool {
    state & !RUNNING != 0
}

/// What a checkpoint tells the work that called it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "a checkpoint can report that shutdown was requested"]
pub enum Checkpoint {
    /// No pause is requested (or it was lifted): go on.
    Continue,
    /// Shutdown was requested: stop soon, at the next point that is safe.
    Shutdown,
}

impl Checkpoint {
    /// Returns `true` if the work should stop.
    pub fn is_shutdown(self) -> bool {
        self == Checkpoint::Shutdown
    }
}

/// A shared handle to one pause gate.
#[derive(Clone, Default)]
pub(crate) struct Gate(Arc<GateInner>);

impl std::ops::Deref for Gate {
    type Target = GateInner;

    fn deref(&self) -> &GateInner {
        &self.0
    }
}

pub(crate) struct GateInner {
    state: AtomicUsize,
    lock: Mutex<Waits>,
    /// The owner sleeps here while blocked in a pause.
    owner_cv: Condvar,
    /// The owner sleeps here while idle between units. Kept apart from
    /// `owner_cv` so that lifting a pause does not wake idle owners: with
    /// no work, they have nothing to resume.
    idle_cv: Condvar,
    /// Observers sleep here, waiting for the owner to park.
    observer_cv: Condvar,
}

#[derive(Default)]
struct Waits {
    /// Owner threads blocked on `owner_cv` (one, in practice).
    owners: usize,
    /// Owner threads sleeping on `idle_cv`.
    idlers: usize,
    /// Threads blocked on `observer_cv`.
    observers: usize,
    /// New work was announced while the owner was not sleeping.
    nudged: bool,
}

impl Default for GateInner {
    fn default() -> Self {
        Self {
            state: AtomicUsize::new(0),
            lock: Mutex::new(Waits::default()),
            owner_cv: Condvar::new(),
            idle_cv: Condvar::new(),
            observer_cv: Condvar::new(),
        }
    }
}

impl Gate {
    fn load(&self) -> usize {
        self.state.load(Ordering::SeqCst)
    }

    pub(crate) fn is_requested(&self) -> bool {
        requested(self.load())
    }

    pub(crate) fn is_running(&self) -> bool {
        self.load() & RUNNING != 0
    }

    /// Returns `true` if a pause is requested and the owner has parked.
    pub(crate) fn is_paused_and_parked(&self) -> bool {
        let state = self.load();
        requested(state) && state & RUNNING == 0
    }

    // Requests ------------------------------------------------------------

    /// Sets the manual switch; returns `true` if it was off.
    pub(crate) fn pause(&self) -> bool {
        // No wake needed: a sleeping owner is parked already, and an owner
        // at work sees the request at its next checkpoint.
        self.state.fetch_or(MANUAL, Ordering::SeqCst) & MANUAL == 0
    }

    /// Clears the manual switch; returns `true` if it was on.
    pub(crate) fn resume(&self) -> bool {
        let prev = self.state.fetch_and(!MANUAL, Ordering::SeqCst);
        if prev & MANUAL == 0 {
            return false;
        }
        if !requested(prev & !MANUAL) {
            self.wake_all();
        }
        true
    }

    pub(crate) fn add_hold(&self) {
        self.state.fetch_add(HOLD_ONE, Ordering::SeqCst);
    }

    pub(crate) fn remove_hold(&self) {
        let prev = self.state.fetch_sub(HOLD_ONE, Ordering::SeqCst);
        debug_assert!(prev >= HOLD_ONE, "pause hold released twice");
        if !requested(prev - HOLD_ONE) {
            self.wake_all();
        }
    }

    // The owner's transitions ---------------------------------------------

    /// Marks the owner as parked and tells observers if a pause waits on it.
    pub(crate) fn park(&self) {
        let prev = self.state.fetch_and(!RUNNING, Ordering::SeqCst);
        if requested(prev) && prev & RUNNING != 0 {
            // Taking the lock orders this after any observer's check of
            // `state` (observers check while holding it); the notify itself
            // can come after unlocking, so woken observers do not block on
            // a lock we still hold.
            let observers = sync::lock(&self.lock).observers;
            if observers != 0 {
                self.observer_cv.notify_all();
            }
        }
    }

    /// Sets `RUNNING` if no pause is requested: the only way an owner
    /// leaves the parked state (invariant 1).
    pub(crate) fn try_run(&self) -> bool {
        let mut state = self.load();
        loop {
            if requested(state) {
                return false;
            }
            match self.state.compare_exchange_weak(
                state,
                state | RUNNING,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => return true,
                Err(actual) => state = actual,
            }
        }
    }

    /// Leaves the parked state to start a unit of work, blocking while a
    /// pause is requested. Returns `false` if shutdown cut the wait short.
    pub(crate) fn begin_unit(&self, shutdown: Option<&Shutdown>) -> bool {
        loop {
            if self.try_run() {
                return true;
            }
            if !self.wait_resumed(shutdown) {
                return false;
            }
        }
    }

    /// A checkpoint's fast path: one relaxed load when no pause is asked.
    ///
    /// Relaxed is enough: this load only decides whether to look closer.
    /// Parking itself goes through read-modify-writes on the same word, so
    /// a request that this load misses is seen at the next checkpoint or at
    /// the end of the unit, and no observer is told "parked" before then.
    ///
    /// `works_after` says whether the caller goes on working when the
    /// checkpoint returns (an active owner does); it is then marked running
    /// again once the pause is lifted.
    #[inline]
    pub(crate) fn checkpoint(&self, shutdown: Option<&Shutdown>, works_after: bool) -> Checkpoint {
        if !requested(self.state.load(Ordering::Relaxed)) {
            return Checkpoint::Continue;
        }
        self.checkpoint_slow(shutdown, works_after)
    }

    /// The token checkpoint's fast path, in one relaxed load: `true` when
    /// the owner is running and no pause is requested, the common case in
    /// which a checkpoint has nothing to do.
    #[inline]
    pub(crate) fn is_running_unpaused_relaxed(&self) -> bool {
        self.state.load(Ordering::Relaxed) == RUNNING
    }

    #[cold]
    pub(crate) fn checkpoint_slow(
        &self,
        shutdown: Option<&Shutdown>,
        works_after: bool,
    ) -> Checkpoint {
        self.park();
        loop {
            if !self.wait_resumed(shutdown) {
                // The owner stays parked: a shutdown during a pause must
                // not let work run under a safe state. The caller is to
                // wind down without touching anything a safe state guards
                // (see `Unit::checkpoint`).
                return Checkpoint::Shutdown;
            }
            if !works_after || self.try_run() {
                return Checkpoint::Continue;
            }
            // A new request came between the wake-up and `try_run`.
        }
    }

    /// Blocks the owner until no pause is requested (returns `true`) or
    /// shutdown is requested (returns `false`).
    fn wait_resumed(&self, shutdown: Option<&Shutdown>) -> bool {
        let _subscription = shutdown.map(|s| s.subscribe(self));
        let mut waits = sync::lock(&self.lock);
        waits.owners += 1;
        let resumed = loop {
            if !self.is_requested() {
                break true;
            }
            if shutdown.is_some_and(Shutdown::is_requested) {
                break false;
            }
            waits = self.owner_cv.wait(waits).unwrap_or_else(|p| p.into_inner());
        };
        waits.owners -= 1;
        resumed
    }

    /// Sleeps the (parked) owner until new work is announced, shutdown is
    /// requested or `deadline` passes. Spurious returns are possible; the
    /// owner just looks for work again.
    ///
    /// Pausing or resuming does not wake an idle owner: it is parked
    /// already, and it had no work before the pause. Work announced during
    /// a pause wakes it, and it then waits for the resume in `begin_unit`.
    pub(crate) fn idle(&self, shutdown: Option<&Shutdown>, deadline: Option<Instant>) {
        let _subscription = shutdown.map(|s| s.subscribe(self));
        let mut waits = sync::lock(&self.lock);
        if !waits.nudged && !shutdown.is_some_and(Shutdown::is_requested) {
            waits.idlers += 1;
            let (w, _) = sync::wait_until(&self.idle_cv, waits, deadline);
            waits = w;
            waits.idlers -= 1;
        }
        waits.nudged = false;
    }

    /// Announces new work: an idle owner wakes, a busy one looks again
    /// before it sleeps.
    pub(crate) fn nudge(&self) {
        let idlers = {
            let mut waits = sync::lock(&self.lock);
            waits.nudged = true;
            waits.idlers
        };
        if idlers != 0 {
            self.idle_cv.notify_all();
        }
    }

    /// Wakes the owner wherever it sleeps (used by shutdown).
    pub(crate) fn wake_owner(&self) {
        let (owners, idlers) = {
            let waits = sync::lock(&self.lock);
            (waits.owners, waits.idlers)
        };
        if owners != 0 {
            self.owner_cv.notify_all();
        }
        if idlers != 0 {
            self.idle_cv.notify_all();
        }
    }

    /// Tells a paused owner and any observers that the pause was lifted.
    ///
    /// Every notify here and above follows the same pattern: the state
    /// change happens first, then the lock is taken (so any waiter has
    /// either not checked yet, and will see the change, or is asleep), and
    /// the notify comes after unlocking so the woken thread does not block
    /// on the lock (invariant 2).
    fn wake_all(&self) {
        let (owners, observers) = {
            let waits = sync::lock(&self.lock);
            (waits.owners, waits.observers)
        };
        if owners != 0 {
            self.owner_cv.notify_all();
        }
        if observers != 0 {
            self.observer_cv.notify_all();
        }
    }

    // Observers -------------------------------------------------------------

    /// Waits until the owner is parked under a requested pause.
    ///
    /// Returns `false` at once when no pause is requested, when the pause
    /// is lifted during the wait, or when `deadline` passes first.
    pub(crate) fn wait_parked(&self, deadline: Option<Instant>) -> bool {
        let state = self.load();
        if !requested(state) {
            return false;
        }
        if state & RUNNING == 0 {
            return true;
        }
        let mut waits = sync::lock(&self.lock);
        waits.observers += 1;
        let parked = loop {
            let state = self.load();
            if !requested(state) {
                break false;
            }
            if state & RUNNING == 0 {
                break true;
            }
            let (w, waited) = sync::wait_until(&self.observer_cv, waits, deadline);
            waits = w;
            if !waited {
                break self.is_paused_and_parked();
            }
        };
        waits.observers -= 1;
        parked
    }
}
