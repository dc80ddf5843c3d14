//! A shared request to stop, that wakes whoever is blocked on it.

use std::fmt;
use std::time::Duration;

use crate::gate::Gate;
use crate::sync::{self, Arc, AtomicBool, Condvar, Mutex, Ordering};

/// A request to stop, shared by clones, that wakes blocked waits.
///
/// Pass it to [`WorkerToken::check_pause`](crate::WorkerToken::check_pause):
/// a worker blocked in a pause returns as soon as shutdown is requested,
/// without polling. Once requested, a shutdown stays requested.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use nu_coord::Shutdown;
///
/// let shutdown = Shutdown::new();
/// let worker = {
///     let shutdown = shutdown.clone();
///     std::thread::spawn(move || {
///         // Sleeps between rounds, but wakes at once on shutdown.
///         while !shutdown.sleep(Duration::from_secs(60)) {}
///     })
/// };
/// shutdown.request();
/// worker.join().unwrap();
/// ```
#[derive(Clone, Default)]
pub struct Shutdown {
    inner: Arc<ShutdownInner>,
}

#[derive(Default)]
struct ShutdownInner {
    requested: AtomicBool,
    /// Gates whose owners are blocked in a pause with this shutdown, so that
    /// `request` can wake them; entries live only for the blocked wait.
    listeners: Mutex<Listeners>,
    /// Wakes `sleep`.
    cv: Condvar,
}

#[derive(Default)]
struct Listeners {
    next_id: u64,
    gates: Vec<(u64, Gate)>,
}

impl Shutdown {
    /// Creates a shutdown that has not been requested.
    pub fn new() -> Self {
        Self::default()
    }

    /// Requests shutdown and wakes everything blocked on it.
    ///
    /// Returns `true` if this call made the request, `false` if it had
    /// already been made.
    pub fn request(&self) -> bool {
        // SeqCst pairs with `subscribe` followed by `is_requested` in a
        // blocked wait: either the waiter sees the flag, or we see the
        // waiter in the list and wake it.
        if self.inner.requested.swap(true, Ordering::SeqCst) {
            return false;
        }
        let gates: Vec<Gate> = {
            let listeners = sync::lock(&self.inner.listeners);
            self.inner.cv.notify_all();
            listeners
                .gates
                .iter()
                .map(|(_, gate)| gate.clone())
                .collect()
        };
        // Outside our lock, so the lock order stays flat.
        for gate in gates {
            gate.wake_owner();
        }
        true
    }

    /// Returns `true` once shutdown has been requested.
    pub fn is_requested(&self) -> bool {
        self.inner.requested.load(Ordering::SeqCst)
    }

    /// Sleeps for `timeout` or until shutdown is requested, whichever comes
    /// first, and returns whether shutdown is requested.
    pub fn sleep(&self, timeout: Duration) -> bool {
        let deadline = sync::deadline_after(timeout);
        let mut guard = sync::lock(&self.inner.listeners);
        while !self.is_requested() {
            let (g, waited) = sync::wait_until(&self.inner.cv, guard, deadline);
            guard = g;
            if !waited {
                break;
            }
        }
        self.is_requested()
    }

    /// Registers `gate` to be woken by `request` until the subscription is
    /// dropped. The caller checks `is_requested` after subscribing.
    pub(crate) fn subscribe(&self, gate: &Gate) -> Subscription<'_> {
        let mut listeners = sync::lock(&self.inner.listeners);
        let id = listeners.next_id;
        listeners.next_id += 1;
        listeners.gates.push((id, gate.clone()));
        Subscription { shutdown: self, id }
    }
}

impl fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shutdown")
            .field("requested", &self.is_requested())
            .finish()
    }
}

/// Removes a gate from a shutdown's listeners when dropped.
pub(crate) struct Subscription<'a> {
    shutdown: &'a Shutdown,
    id: u64,
}

impl Drop for Subscription<'_> {
    fn drop(&mut self) {
        let mut listeners = sync::lock(&self.shutdown.inner.listeners);
        listeners.gates.retain(|(id, _)| *id != self.id);
    }
}
