mod common;

use std::time::Duration;

use common::{scripted, wait_for, Nothing, Step, A_MOMENT, PATIENCE};
use nu_coord::{BackgroundWorkers, Error, WorkerCounter, WorkerKind, WorkerOptions, WorkerState};

fn three() -> (WorkerCounter, BackgroundWorkers) {
    let counter = WorkerCounter::new();
    let workers = BackgroundWorkers::new(&counter);
    for name in ["conversations", "exchanges", "embeddings"] {
        workers
            .register(name, Nothing, WorkerOptions::default())
            .unwrap();
    }
    (counter, workers)
}

#[test]
fn unknown_and_duplicate_names_are_errors_that_help() {
    let (_counter, workers) = three();
    let err = workers.pause("embedings").unwrap_err();
    assert!(matches!(err, Error::UnknownWorker { .. }));
    assert_eq!(
        err.to_string(),
        "unknown worker \"embedings\"; known workers: conversations, exchanges, embeddings"
    );
    for result in [
        workers.start("x").map(|_| ()),
        workers.stop("x", A_MOMENT).map(|_| ()),
        workers.resume("x").map(|_| ()),
        workers.enable("x").map(|_| ()),
        workers.disable("x", A_MOMENT).map(|_| ()),
        workers.nudge("x"),
        workers.status("x").map(|_| ()),
    ] {
        assert!(matches!(result, Err(Error::UnknownWorker { .. })));
    }
    let err = workers
        .register("exchanges", Nothing, WorkerOptions::default())
        .unwrap_err();
    assert!(err.to_string().contains("already registered"), "{err}");
    assert_eq!(
        workers.names(),
        ["conversations", "exchanges", "embeddings"]
    );
}

#[test]
fn start_pause_resume_stop_all() {
    let (counter, workers) = three();
    workers.start_all().unwrap();
    assert_eq!(counter.active_count(WorkerKind::BackgroundWorker), 3);
    assert!(!workers.all_paused());

    assert_eq!(workers.pause_all(), 3);
    assert!(workers.all_paused());
    assert!(workers.wait_until_all_paused(PATIENCE));
    assert!(workers.all_parked());
    assert!(workers.not_parked().is_empty());

    assert_eq!(workers.resume_all(), 3);
    assert!(!workers.all_paused());
    workers.stop_all(PATIENCE).unwrap();
    assert_eq!(counter.active_count(WorkerKind::BackgroundWorker), 0);
    assert!(workers
        .statuses()
        .iter()
        .all(|s| s.state == WorkerState::Stopped));
}

#[test]
fn wait_until_all_paused_names_the_worker_still_in_a_unit() {
    let counter = WorkerCounter::new();
    let workers = BackgroundWorkers::new(&counter);
    workers
        .register("idle", Nothing, WorkerOptions::default())
        .unwrap();
    let (task, handle) = scripted(vec![Step::Gated]);
    workers
        .register("busy", task, WorkerOptions::default())
        .unwrap();
    workers.start_all().unwrap();
    handle.entered.recv_timeout(PATIENCE).unwrap();

    workers.pause_all();
    assert!(!workers.wait_until_all_paused(A_MOMENT));
    assert_eq!(workers.not_parked(), ["busy"]);

    handle.go.send(()).unwrap();
    assert!(workers.wait_until_all_paused(PATIENCE));
    handle.go.send(()).unwrap();
    workers.stop_all(PATIENCE).unwrap();
}

#[test]
fn a_set_wide_hold_keeps_the_users_pause_and_covers_new_workers() {
    let (_counter, workers) = three();
    workers.start_all().unwrap();
    workers.pause("exchanges").unwrap();

    let hold = workers.hold_all();
    assert!(workers.all_paused());
    let (late, late_handle) = scripted(vec![Step::Ok("late", 0.0)]);
    workers
        .register("late", late, WorkerOptions::default())
        .unwrap();
    workers.start("late").unwrap();
    assert!(workers.wait_until_all_paused(PATIENCE));
    std::thread::sleep(A_MOMENT);
    assert!(
        late_handle.done().is_empty(),
        "registered during the hold: paused"
    );

    drop(hold);
    assert!(late_handle.wait_done(1));
    let paused: Vec<_> = workers
        .statuses()
        .into_iter()
        .filter(|s| s.paused)
        .map(|s| s.name)
        .collect();
    assert_eq!(paused, ["exchanges"], "the user's pause survives the hold");
    workers.stop_all(PATIENCE).unwrap();
}

#[test]
fn start_all_skips_disabled_workers() {
    let (counter, workers) = three();
    workers.disable("embeddings", PATIENCE).unwrap();
    workers.start_all().unwrap();
    assert_eq!(counter.active_count(WorkerKind::BackgroundWorker), 2);
    assert_eq!(
        workers.status("embeddings").unwrap().state,
        WorkerState::Disabled
    );
    workers.enable("embeddings").unwrap();
    workers.start("embeddings").unwrap();
    assert!(wait_for(|| counter
        .active_count(WorkerKind::BackgroundWorker)
        == 3));
    workers.stop_all(Duration::from_secs(5)).unwrap();
}
