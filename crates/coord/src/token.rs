//! One counted unit of registered work, optionally with a pause gate.

use std::fmt;
use std::sync::atomic::AtomicU64 as StdAtomicU64;
use std::time::Duration;

use crate::counter::{Admission, CounterInner, WorkerCounter};
use crate::gate::{Checkpoint, Gate};
use crate::kind::WorkerKind;
use crate::shutdown::Shutdown;
use crate::sync::{self, Arc, AtomicBool, Ordering};
use crate::Error;

/// Source of default token names; only uniqueness matters.
static NEXT_ID: StdAtomicU64 = StdAtomicU64::new(1);

/// One unit of registered work, counted by a [`WorkerCounter`] while active.
///
/// A token counts from a successful [`activate`](Self::activate) until
/// [`release`](Self::release) or drop, exactly once: both calls are
/// idempotent and safe from any thread, and a token dropped while active is
/// released, so work that returns, fails, panics or is cancelled leaves the
/// counts right.
///
/// A *pausable* token also carries a pause gate. [`pause`](Self::pause)
/// only asks; the work parks when it next calls
/// [`check_pause`](Self::check_pause), and
/// [`wait_until_paused`](Self::wait_until_paused) returns once it has.
///
/// # Examples
///
/// ```
/// use nu_coord::{WorkerCounter, WorkerKind, WorkerToken};
///
/// let counter = WorkerCounter::new();
/// let token = WorkerToken::new(&counter, WorkerKind::Orchestrator).named("exchange-1");
/// assert!(token.activate()?);
/// assert!(!token.activate()?); // already active: counted once
/// assert_eq!(counter.active_count(WorkerKind::Orchestrator), 1);
///
/// // Orchestrator tokens are not pausable.
/// let err = token.pause().unwrap_err();
/// assert_eq!(err.to_string(), "worker exchange-1 is not pausable");
///
/// drop(token); // releases
/// assert_eq!(counter.active_count(WorkerKind::Orchestrator), 0);
/// # Ok::<(), nu_coord::Error>(())
/// ```
pub struct WorkerToken {
    counter: Arc<CounterInner>,
    kind: WorkerKind,
    name: Box<str>,
    /// `true` between a successful activation and the matching release.
    active: AtomicBool,
    gate: Option<Gate>,
    /// Background runners skip admission: they park instead of waiting.
    bypass_admission: bool,
}

impl WorkerToken {
    /// Creates an inactive, non-pausable token of `kind`.
    ///
    /// Its name is `<kind>-<n>` until [`named`](Self::named) sets another.
    pub fn new(counter: &WorkerCounter, kind: WorkerKind) -> Self {
        Self::build(counter, kind, None)
    }

    /// Creates an inactive, pausable token of `kind`.
    pub fn pausable(counter: &WorkerCounter, kind: WorkerKind) -> Self {
        Self::build(counter, kind, Some(Gate::default()))
    }

    fn build(counter: &WorkerCounter, kind: WorkerKind, gate: Option<Gate>) -> Self {
        let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self {
            counter: counter.inner.clone(),
            kind,
            name: format!("{kind}-{id}").into(),
            active: AtomicBool::new(false),
            gate,
            bypass_admission: false,
        }
    }

    /// Sets the name used in errors and status.
    ///
    /// # Panics
    ///
    /// Panics if the token is active: a name is given before the work
    /// starts.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        assert!(!self.is_active(), "name a token before activating it");
        self.name = name.into().into();
        self
    }

    pub(crate) fn bypassing_admission(mut self) -> Self {
        self.bypass_admission = true;
        self
    }

    /// Returns the token's kind.
    pub fn kind(&self) -> WorkerKind {
        self.kind
    }

    /// Returns the token's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Returns `true` if the token has a pause gate.
    pub fn is_pausable(&self) -> bool {
        self.gate.is_some()
    }

    // Counting ----------------------------------------------------------

    /// Counts the token as active, refusing if admission for its kind is
    /// closed.
    ///
    /// Returns `Ok(true)` if this call activated the token and `Ok(false)`
    /// if it was already active. Same as
    /// `activate_with(Admission::Refuse)`.
    ///
    /// A pausable token counts as running from here on, except when a
    /// pause is already requested: then it counts as parked until its
    /// first [`check_pause`](Self::check_pause) or
    /// [`begin_unit`](Self::begin_unit) after the pause is lifted, so the
    /// work must reach one of those before it touches anything a safe
    /// state protects.
    ///
    /// # Panics
    ///
    /// Panics if 4 294 967 295 tokens of the kind are active already.
    ///
    /// # Errors
    ///
    /// [`Error::AdmissionClosed`] while a safe state has closed admission
    /// for the token's kind.
    #[inline]
    pub fn activate(&self) -> Result<bool, Error> {
        self.activate_with(Admission::Refuse)
    }

    /// Counts the token as active, waiting for admission as `admission`
    /// says.
    ///
    /// # Errors
    ///
    /// [`Error::AdmissionClosed`] if admission is closed and stays closed
    /// for as long as `admission` allows.
    ///
    /// # Panics
    ///
    /// As [`activate`](Self::activate).
    #[inline]
    pub fn activate_with(&self, admission: Admission) -> Result<bool, Error> {
        if self.active.load(Ordering::Relaxed) {
            return Ok(false);
        }
        // Count first, then publish `active`: `release` uncounts only after
        // taking `active` from true to false, so it can never uncount a
        // token whose count has not landed.
        self.counter
            .try_enter(self.kind, admission, self.bypass_admission)?;
        if self
            .active
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            // Another thread activated the token at the same time and won.
            self.counter.leave(self.kind);
            return Ok(false);
        }
        if let Some(gate) = &self.gate {
            // Running from now on, unless a pause is in force: then the
            // work counts as parked until it leaves its first checkpoint.
            gate.try_run();
            if !self.active.load(Ordering::SeqCst) {
                // Released by another thread since the exchange above:
                // undo, so an inactive token never counts as running.
                gate.park();
            }
        }
        Ok(true)
    }

    /// Uncounts the token. Returns `true` if this call released it, `false`
    /// if it was not active.
    #[inline]
    pub fn release(&self) -> bool {
        if !self.active.swap(false, Ordering::AcqRel) {
            return false;
        }
        if let Some(gate) = &self.gate {
            gate.park();
        }
        self.counter.leave(self.kind);
        true
    }

    /// Returns `true` if the token is counted as active.
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    // Pausing -----------------------------------------------------------

    fn gate(&self) -> Result<&Gate, Error> {
        self.gate.as_ref().ok_or_else(|| Error::NotPausable {
            name: self.name.to_string(),
        })
    }

    /// Asks the work to pause. Returns `Ok(true)` if this call switched the
    /// pause on.
    ///
    /// This is the token's own switch; it composes with
    /// [`hold_pause`](Self::hold_pause) holds: the work stays paused while
    /// the switch is on or any hold exists.
    ///
    /// # Errors
    ///
    /// [`Error::NotPausable`], naming the token, if it has no pause gate.
    pub fn pause(&self) -> Result<bool, Error> {
        Ok(self.gate()?.pause())
    }

    /// Switches the pause off. Returns `Ok(true)` if it was on. The work
    /// goes on only if no [`PauseHold`] remains.
    ///
    /// # Errors
    ///
    /// [`Error::NotPausable`], naming the token, if it has no pause gate.
    pub fn resume(&self) -> Result<bool, Error> {
        Ok(self.gate()?.resume())
    }

    /// Keeps the work paused until the returned hold is dropped.
    ///
    /// Holds compose with each other and with the pause switch: the work
    /// resumes only when the switch is off and the last hold is gone.
    ///
    /// # Errors
    ///
    /// [`Error::NotPausable`], naming the token, if it has no pause gate.
    pub fn hold_pause(&self) -> Result<PauseHold, Error> {
        let gate = self.gate()?;
        gate.add_hold();
        Ok(PauseHold { gate: gate.clone() })
    }

    /// Returns `true` if a pause is requested (by the switch or a hold),
    /// whether or not the work has parked yet.
    pub fn is_paused(&self) -> bool {
        self.gate.as_ref().is_some_and(|g| g.is_requested())
    }

    /// Returns `true` if the work is not running: it is blocked at a
    /// checkpoint, between units, or the token is inactive. A non-pausable
    /// token is never parked.
    pub fn is_parked(&self) -> bool {
        self.gate.as_ref().is_some_and(|g| !g.is_running())
    }

    /// A checkpoint: returns at once when no pause is requested, and
    /// otherwise parks here until the pause is lifted or `shutdown` is
    /// requested.
    ///
    /// The fast path is one relaxed atomic load: no lock, no system call.
    /// When shutdown ends a pause, the work stays counted as parked for
    /// good, so it must stop without touching anything a safe state
    /// protects.
    /// As in the original design, `shutdown` is consulted only while
    /// paused: when no pause is requested this returns
    /// [`Checkpoint::Continue`] even after shutdown was requested, so a
    /// loop checks [`Shutdown::is_requested`] on its own terms (the
    /// runner's [`Unit::checkpoint`](crate::Unit::checkpoint) does both).
    /// A token that is not pausable always continues.
    #[inline]
    pub fn check_pause(&self, shutdown: &Shutdown) -> Checkpoint {
        match &self.gate {
            Some(gate) if gate.is_running_unpaused_relaxed() => Checkpoint::Continue,
            Some(gate) => self.check_pause_cold(gate, shutdown),
            None => Checkpoint::Continue,
        }
    }

    /// A checkpoint with something to do: park while a pause is requested,
    /// or, for an active token that counted as parked (it was activated
    /// during a pause since lifted), count as running again.
    #[cold]
    fn check_pause_cold(&self, gate: &Gate, shutdown: &Shutdown) -> Checkpoint {
        if gate.is_requested() {
            return gate.checkpoint_slow(Some(shutdown), self.is_active());
        }
        if self.is_active() {
            gate.try_run();
        }
        Checkpoint::Continue
    }

    /// Waits until a requested pause has taken effect: the work has parked
    /// at a checkpoint or between units (or the token is inactive).
    ///
    /// Returns `false` at once if the token is not pausable or no pause is
    /// requested, and `false` if the pause is lifted or `timeout` passes
    /// first. The wait is woken by the park itself; it does not poll.
    pub fn wait_until_paused(&self, timeout: Duration) -> bool {
        self.gate
            .as_ref()
            .is_some_and(|g| g.wait_parked(sync::deadline_after(timeout)))
    }

    /// Starts a unit of work: blocks while a pause is requested, then marks
    /// the work as running until the returned guard is dropped.
    ///
    /// Between units the work counts as parked, so a pause takes effect the
    /// moment the current unit ends. Returns `None` if `shutdown` is
    /// requested while waiting. A token that is not pausable returns a
    /// guard at once.
    pub fn begin_unit<'a>(&'a self, shutdown: &Shutdown) -> Option<UnitGuard<'a>> {
        if let Some(gate) = &self.gate {
            if !gate.begin_unit(Some(shutdown)) {
                return None;
            }
        }
        Some(UnitGuard { token: self })
    }

    pub(crate) fn gate_inner(&self) -> Option<&Gate> {
        self.gate.as_ref()
    }
}

impl Drop for WorkerToken {
    fn drop(&mut self) {
        self.release();
    }
}

impl fmt::Debug for WorkerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerToken")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("active", &self.is_active())
            .field("pausable", &self.is_pausable())
            .field("paused", &self.is_paused())
            .field("parked", &self.is_parked())
            .finish()
    }
}

/// Marks a pausable token's work as inside a unit; dropping it parks the
/// work again. Returned by [`WorkerToken::begin_unit`].
#[must_use = "the unit ends as soon as the guard is dropped"]
pub struct UnitGuard<'a> {
    token: &'a WorkerToken,
}

impl fmt::Debug for UnitGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnitGuard")
            .field("token", &self.token.name())
            .finish()
    }
}

impl Drop for UnitGuard<'_> {
    fn drop(&mut self) {
        if let Some(gate) = &self.token.gate {
            gate.park();
        }
    }
}

/// Keeps one pause gate paused until dropped.
///
/// Returned by [`WorkerToken::hold_pause`]; collections of them back
/// [`WorkersHold`](crate::WorkersHold) and [`SafeState`](crate::SafeState).
#[must_use = "the pause is lifted as soon as the hold is dropped"]
pub struct PauseHold {
    gate: Gate,
}

impl PauseHold {
    pub(crate) fn on(gate: &Gate) -> Self {
        gate.add_hold();
        Self { gate: gate.clone() }
    }
}

impl fmt::Debug for PauseHold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PauseHold")
            .field("parked", &!self.gate.is_running())
            .finish()
    }
}

impl Drop for PauseHold {
    fn drop(&mut self) {
        self.gate.remove_hold();
    }
}
