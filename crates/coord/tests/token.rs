mod common;

use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::{A_MOMENT, PATIENCE};
use nu_coord::{Checkpoint, Error, Shutdown, WorkerCounter, WorkerKind, WorkerToken};

fn pausable(counter: &WorkerCounter) -> Arc<WorkerToken> {
    Arc::new(WorkerToken::pausable(counter, WorkerKind::BackgroundWorker).named("indexer"))
}

#[test]
fn walk_through_every_pause_state() {
    let counter = WorkerCounter::new();
    let token = pausable(&counter);
    assert_eq!(token.name(), "indexer");
    assert!(token.is_pausable());
    assert!(!token.is_active());
    assert!(!token.is_paused());
    assert!(token.is_parked(), "an inactive token runs nothing");

    token.activate().unwrap();
    assert!(token.is_active());
    assert!(!token.is_parked(), "an active token runs until it parks");

    assert!(token.pause().unwrap());
    assert!(!token.pause().unwrap(), "pausing twice changes nothing");
    assert!(token.is_paused());
    assert!(!token.is_parked());
    assert!(
        !token.wait_until_paused(A_MOMENT),
        "no checkpoint reached, so not paused yet"
    );

    // The owner reaches a checkpoint and parks there.
    let (parked_tx, parked_rx) = mpsc::channel();
    let owner = {
        let token = token.clone();
        thread::spawn(move || {
            let shutdown = Shutdown::new();
            parked_tx.send(()).unwrap();
            token.check_pause(&shutdown)
        })
    };
    parked_rx.recv().unwrap();
    assert!(token.wait_until_paused(PATIENCE));
    assert!(token.is_parked());

    assert!(token.resume().unwrap());
    assert!(!token.resume().unwrap(), "resuming twice changes nothing");
    assert_eq!(owner.join().unwrap(), Checkpoint::Continue);
    assert!(!token.is_paused());
    assert!(!token.is_parked(), "back at work after the checkpoint");

    token.release();
    assert!(token.is_parked());
}

#[test]
fn wait_until_paused_is_false_without_a_pause() {
    let counter = WorkerCounter::new();
    assert!(!pausable(&counter).wait_until_paused(Duration::ZERO));
    let plain = WorkerToken::new(&counter, WorkerKind::Orchestrator);
    assert!(!plain.wait_until_paused(Duration::ZERO));
    assert!(!plain.is_paused());
    assert!(!plain.is_parked());
}

#[test]
fn a_paused_inactive_token_counts_as_parked() {
    let counter = WorkerCounter::new();
    let token = pausable(&counter);
    token.pause().unwrap();
    assert!(token.wait_until_paused(Duration::ZERO));
}

#[test]
fn check_pause_is_a_no_op_when_not_paused_or_not_pausable() {
    let counter = WorkerCounter::new();
    let shutdown = Shutdown::new();
    assert_eq!(
        pausable(&counter).check_pause(&shutdown),
        Checkpoint::Continue
    );
    let plain = WorkerToken::new(&counter, WorkerKind::Orchestrator);
    assert_eq!(plain.check_pause(&shutdown), Checkpoint::Continue);
    // Not paused: continue even with shutdown requested; as in the
    // original design, shutdown only ends a pause.
    shutdown.request();
    assert_eq!(
        pausable(&counter).check_pause(&shutdown),
        Checkpoint::Continue
    );
    assert_eq!(plain.check_pause(&shutdown), Checkpoint::Continue);
    assert!(plain.resume().is_err());
    assert!(matches!(plain.hold_pause(), Err(Error::NotPausable { .. })));
}

#[test]
fn shutdown_wakes_a_paused_checkpoint() {
    let counter = WorkerCounter::new();
    let token = pausable(&counter);
    token.activate().unwrap();
    token.pause().unwrap();
    let shutdown = Shutdown::new();
    let owner = {
        let token = token.clone();
        let shutdown = shutdown.clone();
        thread::spawn(move || token.check_pause(&shutdown))
    };
    assert!(token.wait_until_paused(PATIENCE));
    assert!(shutdown.request());
    assert!(!shutdown.request(), "a second request changes nothing");
    let outcome = owner.join().unwrap();
    assert!(outcome.is_shutdown());
    assert!(token.is_paused(), "shutdown does not lift the pause");
    assert!(
        token.is_parked(),
        "the owner winds down still counted as parked: a safe state may rely on it"
    );
}

#[test]
fn holds_and_the_switch_compose() {
    let counter = WorkerCounter::new();
    let token = pausable(&counter);
    let first = token.hold_pause().unwrap();
    let second = token.hold_pause().unwrap();
    token.pause().unwrap();

    drop(first);
    assert!(token.is_paused());
    token.resume().unwrap();
    assert!(token.is_paused(), "one hold remains");
    drop(second);
    assert!(!token.is_paused());
}

#[test]
fn a_blocked_owner_resumes_only_when_the_last_hold_goes() {
    let counter = WorkerCounter::new();
    let token = pausable(&counter);
    token.activate().unwrap();
    token.pause().unwrap();
    let hold = token.hold_pause().unwrap();
    let owner = {
        let token = token.clone();
        thread::spawn(move || token.check_pause(&Shutdown::new()))
    };
    assert!(token.wait_until_paused(PATIENCE));
    token.resume().unwrap();
    thread::sleep(A_MOMENT);
    assert!(!owner.is_finished(), "the hold still pauses it");
    assert!(token.is_parked());
    drop(hold);
    assert_eq!(owner.join().unwrap(), Checkpoint::Continue);
}

#[test]
fn units_park_between_them() {
    let counter = WorkerCounter::new();
    let token = pausable(&counter);
    let shutdown = Shutdown::new();
    token.activate().unwrap();

    let unit = token.begin_unit(&shutdown).unwrap();
    assert!(!token.is_parked());
    token.pause().unwrap();
    assert!(!token.wait_until_paused(A_MOMENT), "inside a unit");
    drop(unit);
    assert!(token.wait_until_paused(Duration::ZERO), "the unit ended");

    // The next unit waits for the pause to be lifted.
    let next = {
        let token = token.clone();
        let shutdown = shutdown.clone();
        thread::spawn(move || token.begin_unit(&shutdown).is_some())
    };
    thread::sleep(A_MOMENT);
    assert!(!next.is_finished());
    assert!(token.is_parked(), "waiting to begin is parked");
    token.resume().unwrap();
    assert!(next.join().unwrap());
}

#[test]
fn shutdown_ends_a_wait_to_begin_a_unit() {
    let counter = WorkerCounter::new();
    let token = pausable(&counter);
    token.pause().unwrap();
    let shutdown = Shutdown::new();
    let waiter = {
        let token = token.clone();
        let shutdown = shutdown.clone();
        thread::spawn(move || token.begin_unit(&shutdown).is_none())
    };
    thread::sleep(A_MOMENT);
    shutdown.request();
    assert!(waiter.join().unwrap());
}

#[test]
fn dropping_an_active_pausable_token_parks_and_uncounts_it() {
    let counter = WorkerCounter::new();
    let token = WorkerToken::pausable(&counter, WorkerKind::BackgroundWorker);
    token.activate().unwrap();
    assert_eq!(counter.active_count(WorkerKind::BackgroundWorker), 1);
    drop(token);
    assert_eq!(counter.active_count(WorkerKind::BackgroundWorker), 0);
}

#[test]
fn default_names_are_distinct_and_debug_never_blocks() {
    let counter = WorkerCounter::new();
    let a = WorkerToken::new(&counter, WorkerKind::Orchestrator);
    let b = WorkerToken::new(&counter, WorkerKind::Orchestrator);
    assert_ne!(a.name(), b.name());
    assert!(a.name().starts_with("orchestrator-"));
    let text = format!("{a:?}");
    assert!(text.contains("active: false"), "{text}");
}

#[test]
fn shutdown_sleep_wakes_on_request() {
    let shutdown = Shutdown::new();
    assert!(!shutdown.sleep(Duration::from_millis(1)));
    let sleeper = {
        let shutdown = shutdown.clone();
        thread::spawn(move || shutdown.sleep(PATIENCE))
    };
    thread::sleep(A_MOMENT);
    shutdown.request();
    assert!(sleeper.join().unwrap());
}

#[test]
fn a_token_activated_during_a_pause_counts_as_parked_until_its_first_checkpoint() {
    let counter = WorkerCounter::new();
    let token = pausable(&counter);
    token.pause().unwrap();
    token.activate().unwrap();
    assert!(token.wait_until_paused(Duration::ZERO));
    let owner = {
        let token = token.clone();
        thread::spawn(move || token.check_pause(&Shutdown::new()))
    };
    thread::sleep(A_MOMENT);
    token.resume().unwrap();
    assert_eq!(owner.join().unwrap(), Checkpoint::Continue);
    assert!(
        !token.is_parked(),
        "running once it has left the checkpoint"
    );
}

#[test]
fn a_token_activated_during_a_pause_lifted_before_its_checkpoint_runs_again_there() {
    let counter = WorkerCounter::new();
    let token = pausable(&counter);
    let shutdown = Shutdown::new();
    token.pause().unwrap();
    token.activate().unwrap();
    token.resume().unwrap();
    assert_eq!(token.check_pause(&shutdown), Checkpoint::Continue);
    assert!(
        !token.is_parked(),
        "working again after its first checkpoint"
    );
    token.pause().unwrap();
    assert!(
        !token.wait_until_paused(A_MOMENT),
        "a new pause waits for the next checkpoint"
    );
}
