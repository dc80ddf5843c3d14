//! Model checks of the state machines under every interleaving loom finds.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test -p nu-coord --no-default-features
//! --release --test loom`. In these builds the library's synchronisation
//! types are loom's, so a lost wake-up shows up as a deadlock and a broken
//! invariant as a failed assertion.

#![cfg(loom)]

use std::time::Duration;

use loom::sync::atomic::{AtomicBool, Ordering};
use loom::sync::Arc;
use loom::thread;
use nu_coord::{
    Admission, BackgroundTask, BackgroundWorkers, Checkpoint, Outcome, Scope, Shutdown, TaskError,
    Unit, WorkCoordinator, WorkerCounter, WorkerKind, WorkerOptions, WorkerToken,
};

/// Timed waits never time out under loom; this just reads as "unbounded".
const FOREVER: Duration = Duration::from_secs(3600);

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(f);
}

#[test]
fn paused_means_parked() {
    model(|| {
        let counter = WorkerCounter::new();
        let token = Arc::new(WorkerToken::pausable(
            &counter,
            WorkerKind::BackgroundWorker,
        ));
        let in_unit = Arc::new(AtomicBool::new(false));
        let shutdown = Shutdown::new();

        let worker = {
            let (token, in_unit, shutdown) = (token.clone(), in_unit.clone(), shutdown.clone());
            thread::spawn(move || {
                let unit = token.begin_unit(&shutdown).expect("no shutdown here");
                in_unit.store(true, Ordering::SeqCst);
                in_unit.store(false, Ordering::SeqCst);
                drop(unit);
            })
        };

        token.pause().unwrap();
        assert!(token.wait_until_paused(FOREVER));
        assert!(
            !in_unit.load(Ordering::SeqCst),
            "reported paused inside a unit"
        );
        token.resume().unwrap();
        worker.join().unwrap();
    });
}

#[test]
fn resume_wakes_a_parked_checkpoint() {
    model(|| {
        let counter = WorkerCounter::new();
        let token = Arc::new(WorkerToken::pausable(
            &counter,
            WorkerKind::BackgroundWorker,
        ));
        token.activate().unwrap();
        token.pause().unwrap();
        let worker = {
            let token = token.clone();
            thread::spawn(move || token.check_pause(&Shutdown::new()))
        };
        token.resume().unwrap();
        assert_eq!(worker.join().unwrap(), Checkpoint::Continue);
        assert!(!token.is_parked());
    });
}

#[test]
fn shutdown_wakes_a_parked_checkpoint() {
    model(|| {
        let counter = WorkerCounter::new();
        let token = Arc::new(WorkerToken::pausable(
            &counter,
            WorkerKind::BackgroundWorker,
        ));
        token.pause().unwrap();
        let shutdown = Shutdown::new();
        let worker = {
            let (token, shutdown) = (token.clone(), shutdown.clone());
            thread::spawn(move || token.check_pause(&shutdown))
        };
        shutdown.request();
        assert_eq!(worker.join().unwrap(), Checkpoint::Shutdown);
    });
}

#[test]
fn holds_compose_and_the_last_one_wakes_the_owner() {
    model(|| {
        let counter = WorkerCounter::new();
        let token = Arc::new(WorkerToken::pausable(
            &counter,
            WorkerKind::BackgroundWorker,
        ));
        token.activate().unwrap();
        let first = token.hold_pause().unwrap();
        let second = token.hold_pause().unwrap();
        let owner = {
            let token = token.clone();
            thread::spawn(move || token.check_pause(&Shutdown::new()))
        };
        let other = thread::spawn(move || drop(second));
        drop(first);
        other.join().unwrap();
        assert_eq!(owner.join().unwrap(), Checkpoint::Continue);
        assert!(!token.is_paused());
    });
}

#[test]
fn the_last_release_wakes_an_idle_wait() {
    model(|| {
        let counter = WorkerCounter::new();
        let a = counter.token(WorkerKind::Orchestrator);
        let b = counter.token(WorkerKind::BackgroundWorker);
        a.activate().unwrap();
        b.activate().unwrap();
        let ta = thread::spawn(move || drop(a));
        let tb = thread::spawn(move || drop(b));
        assert!(counter.wait_for_idle(Scope::All, FOREVER));
        ta.join().unwrap();
        tb.join().unwrap();
    });
}

#[test]
fn a_waiting_admission_is_woken_when_the_safe_state_ends() {
    model(|| {
        let counter = WorkerCounter::new();
        let hold = counter.close_admission(WorkerKind::Orchestrator);
        let waiter = {
            let counter = counter.clone();
            thread::spawn(move || {
                let token = counter.token(WorkerKind::Orchestrator);
                token.activate_with(Admission::Wait(FOREVER)).unwrap();
                assert_eq!(counter.active_count(WorkerKind::Orchestrator), 1);
            })
        };
        drop(hold);
        waiter.join().unwrap();
        assert_eq!(counter.active_count(WorkerKind::Orchestrator), 0);
    });
}

#[test]
fn nothing_is_admitted_inside_a_safe_state() {
    model(|| {
        let counter = WorkerCounter::new();
        let coordinator = WorkCoordinator::new(&counter, &BackgroundWorkers::new(&counter));
        let exchange = {
            let counter = counter.clone();
            thread::spawn(move || {
                let token = counter.token(WorkerKind::Orchestrator);
                if token.activate().is_ok() {
                    token.release();
                }
            })
        };
        let safe = coordinator.prepare_for_backup(FOREVER).unwrap();
        assert_eq!(counter.active_count(WorkerKind::Orchestrator), 0);
        drop(safe);
        exchange.join().unwrap();
        assert_eq!(counter.active_count(WorkerKind::Orchestrator), 0);
        assert!(counter.is_admitting(WorkerKind::Orchestrator));
    });
}

/// A task that is never started in these models; it only gives the
/// workers' pause gates something to belong to.
struct Never;

impl BackgroundTask for Never {
    type Item = ();
    fn next_item(&mut self, _: &Unit<'_>) -> Result<Option<()>, TaskError> {
        Ok(None)
    }
    fn describe(&self, _: &()) -> String {
        String::new()
    }
    fn run_item(&mut self, _: (), _: &Unit<'_>) -> Result<Outcome, TaskError> {
        Ok(Outcome::default())
    }
}

#[test]
fn overlapping_safe_states_and_a_users_pause_compose() {
    model(|| {
        let counter = WorkerCounter::new();
        let workers = BackgroundWorkers::new(&counter);
        workers
            .register("w", Never, WorkerOptions::default())
            .unwrap();
        let coordinator = WorkCoordinator::new(&counter, &workers);

        let backup = {
            let coordinator = coordinator.clone();
            thread::spawn(move || {
                let safe = coordinator.prepare_for_backup(FOREVER).unwrap();
                assert!(coordinator.workers().all_paused());
                assert!(!coordinator.counter().is_admitting(WorkerKind::Orchestrator));
                drop(safe);
            })
        };
        let user = {
            let workers = workers.clone();
            thread::spawn(move || {
                workers.pause("w").unwrap();
            })
        };
        let editor = coordinator.prepare_for_external_editor(FOREVER).unwrap();
        assert!(workers.all_paused());
        drop(editor);
        backup.join().unwrap();
        user.join().unwrap();

        // Both safe states are gone; the user's pause stays.
        let status = coordinator.status();
        assert_eq!(status.safe_states, 0);
        assert!(status.admitting);
        assert!(workers.all_paused());
        workers.resume("w").unwrap();
        assert!(!workers.all_paused());
    });
}
