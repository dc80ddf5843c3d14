mod common;

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use common::{A_MOMENT, PATIENCE};
use nu_coord::{Admission, Counts, Error, Scope, WorkerCounter, WorkerKind};

#[test]
fn walk_through_every_state() {
    let counter = WorkerCounter::new();
    assert_eq!(counter.all_counts(), Counts::default());
    assert!(counter.is_idle(Scope::All));
    assert!(!counter.any_active(Scope::All));
    assert!(counter.is_admitting(WorkerKind::Orchestrator));

    let orchestrator = counter.token(WorkerKind::Orchestrator);
    let worker = counter.token(WorkerKind::BackgroundWorker);
    assert!(orchestrator.activate().unwrap());
    assert!(worker.activate().unwrap());
    assert_eq!(
        counter.all_counts(),
        Counts {
            orchestrators: 1,
            background_workers: 1
        }
    );
    assert_eq!(counter.all_counts().total(), 2);
    assert!(counter.any_active(WorkerKind::Orchestrator));
    assert!(!counter.is_idle(WorkerKind::BackgroundWorker));

    assert!(orchestrator.release());
    assert!(!orchestrator.release(), "a second release changes nothing");
    assert!(counter.is_idle(WorkerKind::Orchestrator));
    assert!(counter.any_active(Scope::All));

    drop(worker);
    assert!(counter.is_idle(Scope::All));
}

#[test]
fn wait_for_idle_returns_at_once_when_idle() {
    let counter = WorkerCounter::new();
    assert!(counter.wait_for_idle(Scope::All, Duration::ZERO));
}

#[test]
fn wait_for_idle_times_out_while_work_is_active() {
    let counter = WorkerCounter::new();
    let token = counter.token(WorkerKind::Orchestrator);
    token.activate().unwrap();
    assert!(!counter.wait_for_idle(WorkerKind::Orchestrator, A_MOMENT));
    // Other kinds are idle.
    assert!(counter.wait_for_idle(WorkerKind::BackgroundWorker, Duration::ZERO));
}

#[test]
fn wait_for_idle_is_woken_by_the_last_release() {
    let counter = WorkerCounter::new();
    let tokens: Vec<_> = (0..3)
        .map(|_| {
            let t = counter.token(WorkerKind::Orchestrator);
            t.activate().unwrap();
            t
        })
        .collect();
    let waiter = {
        let counter = counter.clone();
        thread::spawn(move || counter.wait_for_idle(Scope::All, PATIENCE))
    };
    thread::sleep(A_MOMENT);
    for token in tokens {
        token.release();
    }
    assert!(waiter.join().unwrap());
}

#[test]
fn many_waiters_are_all_woken() {
    let counter = WorkerCounter::new();
    let token = counter.token(WorkerKind::Orchestrator);
    token.activate().unwrap();
    let start = Arc::new(Barrier::new(9));
    let waiters: Vec<_> = (0..8)
        .map(|_| {
            let counter = counter.clone();
            let start = start.clone();
            thread::spawn(move || {
                start.wait();
                counter.wait_for_idle(WorkerKind::Orchestrator, PATIENCE)
            })
        })
        .collect();
    start.wait();
    drop(token);
    for waiter in waiters {
        assert!(waiter.join().unwrap());
    }
}

#[test]
fn a_panicking_orchestrator_is_still_uncounted() {
    let counter = WorkerCounter::new();
    let result = {
        let counter = counter.clone();
        thread::spawn(move || {
            let token = counter.token(WorkerKind::Orchestrator);
            token.activate().unwrap();
            panic!("the exchange failed");
        })
        .join()
    };
    assert!(result.is_err());
    assert_eq!(counter.active_count(WorkerKind::Orchestrator), 0);
}

#[test]
fn closed_admission_refuses_or_waits() {
    let counter = WorkerCounter::new();
    let hold = counter.close_admission(WorkerKind::Orchestrator);
    assert!(!counter.is_admitting(WorkerKind::Orchestrator));

    let token = counter.token(WorkerKind::Orchestrator);
    let err = token.activate().unwrap_err();
    assert!(matches!(
        err,
        Error::AdmissionClosed {
            kind: WorkerKind::Orchestrator
        }
    ));
    assert!(err.to_string().contains("not admitted"), "{err}");
    assert!(!token.is_active());
    assert_eq!(counter.active_count(WorkerKind::Orchestrator), 0);

    // A bounded wait that runs out is refused too, and counts nothing.
    let err = token.activate_with(Admission::Wait(A_MOMENT)).unwrap_err();
    assert!(matches!(err, Error::AdmissionClosed { .. }));
    assert_eq!(counter.active_count(WorkerKind::Orchestrator), 0);

    // Other kinds are not affected.
    assert!(counter
        .token(WorkerKind::BackgroundWorker)
        .activate()
        .unwrap());

    // A waiting activation is admitted when the hold is dropped.
    let waiter = {
        let counter = counter.clone();
        thread::spawn(move || {
            let token = counter.token(WorkerKind::Orchestrator);
            token
                .activate_with(Admission::Wait(PATIENCE))
                .map(|_| token)
        })
    };
    thread::sleep(A_MOMENT);
    drop(hold);
    let token = waiter.join().unwrap().unwrap();
    assert!(token.is_active());
    assert_eq!(counter.active_count(WorkerKind::Orchestrator), 1);
}

#[test]
fn admission_holds_nest() {
    let counter = WorkerCounter::new();
    let first = counter.close_admission(WorkerKind::Orchestrator);
    let second = counter.close_admission(WorkerKind::Orchestrator);
    drop(first);
    assert!(!counter.is_admitting(WorkerKind::Orchestrator));
    drop(second);
    assert!(counter.is_admitting(WorkerKind::Orchestrator));
}

#[test]
fn concurrent_activations_of_one_token_count_once() {
    let counter = WorkerCounter::new();
    let token = Arc::new(counter.token(WorkerKind::Orchestrator));
    for _ in 0..200 {
        let start = Arc::new(Barrier::new(4));
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let token = token.clone();
                let start = start.clone();
                thread::spawn(move || {
                    start.wait();
                    if i % 2 == 0 {
                        token.activate().unwrap();
                    } else {
                        token.release();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let expected = usize::from(token.is_active());
        assert_eq!(counter.active_count(WorkerKind::Orchestrator), expected);
        token.release();
        assert_eq!(counter.active_count(WorkerKind::Orchestrator), 0);
    }
}

#[test]
fn debug_shows_a_snapshot() {
    let counter = WorkerCounter::new();
    let token = counter.token(WorkerKind::Orchestrator);
    token.activate().unwrap();
    let text = format!("{counter:?}");
    assert!(text.contains("orchestrators: 1"), "{text}");
}
