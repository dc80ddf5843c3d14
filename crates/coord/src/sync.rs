//! The one place the library takes its synchronisation types from.
//!
//! Normal builds use `std`; builds with `--cfg loom` swap in loom's
//! instrumented versions so the state machines can be model-checked. Every
//! module says `use crate::sync::...` instead of naming `std::sync`, so a
//! model exercises exactly the code that ships.

use std::time::Instant;

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
#[cfg(loom)]
pub(crate) use loom::sync::{Arc, Condvar, Mutex, MutexGuard};

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// Locks `mutex`, ignoring poisoning.
///
/// The library never runs caller code while it holds one of its own locks,
/// and every critical section leaves the guarded data consistent before it
/// can panic, so a poisoned lock still guards valid data.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Waits on `cv` until notified or until `deadline` passes.
///
/// Returns the guard and `false` if the deadline had already passed when the
/// call was made (the caller then stops waiting). Spurious wake-ups are
/// possible, so callers re-check their condition in a loop.
pub(crate) fn wait_until<'a, T>(
    cv: &Condvar,
    guard: MutexGuard<'a, T>,
    deadline: Option<Instant>,
) -> (MutexGuard<'a, T>, bool) {
    match deadline {
        None => (cv.wait(guard).unwrap_or_else(|p| p.into_inner()), true),
        Some(deadline) => {
            let now = Instant::now();
            if now >= deadline {
                return (guard, false);
            }
            let (guard, _) = cv
                .wait_timeout(guard, deadline - now)
                .unwrap_or_else(|p| p.into_inner());
            (guard, true)
        }
    }
}

/// Turns a timeout into a deadline; a timeout too large to add is no deadline.
pub(crate) fn deadline_after(timeout: std::time::Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}
