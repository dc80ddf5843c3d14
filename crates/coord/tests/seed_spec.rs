//! The original design's testing strategy, test for test.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::{Nothing, Step, A_MOMENT};
use nu_coord::{
    BackgroundWorkers, Shutdown, WorkCoordinator, WorkerCounter, WorkerKind, WorkerOptions,
    WorkerToken,
};

#[test]
fn orchestrator_tokens_count_active_orchestrators() {
    let counter = WorkerCounter::new();
    let token = WorkerToken::new(&counter, WorkerKind::Orchestrator);
    token.activate().unwrap();
    assert_eq!(counter.active_count(WorkerKind::Orchestrator), 1);
    token.release();
    assert_eq!(counter.active_count(WorkerKind::Orchestrator), 0);
}

#[test]
fn orchestrator_tokens_cannot_be_paused() {
    let counter = WorkerCounter::new();
    let token = WorkerToken::new(&counter, WorkerKind::Orchestrator);
    let err = token.pause().unwrap_err();
    assert!(err.to_string().contains("not pausable"), "{err}");
    assert!(err.to_string().contains(token.name()), "{err}");
}

#[test]
fn background_worker_tokens_can_be_paused_and_resumed() {
    let counter = WorkerCounter::new();
    let token = WorkerToken::pausable(&counter, WorkerKind::BackgroundWorker);
    token.pause().unwrap();
    assert!(token.is_paused());
    token.resume().unwrap();
    assert!(!token.is_paused());
}

#[test]
fn background_worker_tokens_block_on_check_pause_when_paused() {
    let counter = WorkerCounter::new();
    let token = Arc::new(WorkerToken::pausable(
        &counter,
        WorkerKind::BackgroundWorker,
    ));
    token.pause().unwrap();

    let blocked = Arc::new(AtomicBool::new(true));
    let thread = {
        let token = token.clone();
        let blocked = blocked.clone();
        thread::spawn(move || {
            let _ = token.check_pause(&Shutdown::new());
            blocked.store(false, Ordering::SeqCst);
        })
    };

    thread::sleep(A_MOMENT);
    assert!(blocked.load(Ordering::SeqCst));

    token.resume().unwrap();
    thread.join().unwrap();
    assert!(!blocked.load(Ordering::SeqCst));
}

#[test]
fn work_coordination_waits_for_active_orchestrators_before_a_backup() {
    let counter = WorkerCounter::new();
    let workers = BackgroundWorkers::new(&counter);
    for name in [
        "conversation_summarizer",
        "exchange_summarizer",
        "embedding_generator",
    ] {
        workers
            .register(name, Nothing, WorkerOptions::default())
            .unwrap();
    }
    let (busy, _handle) = common::scripted(vec![Step::Ok("one", 0.0)]);
    workers
        .register("busy", busy, WorkerOptions::default())
        .unwrap();

    // Start an orchestrator, then the background workers.
    let orchestrator = WorkerToken::new(&counter, WorkerKind::Orchestrator);
    orchestrator.activate().unwrap();
    workers.start_all().unwrap();

    let coordinator = WorkCoordinator::new(&counter, &workers);

    // Should wait for the orchestrator, and give up after half a second.
    let result = coordinator.prepare_for_backup(Duration::from_millis(500));
    assert!(result.is_err());

    orchestrator.release();

    // Now it succeeds.
    let result = coordinator.prepare_for_backup(Duration::from_secs(1));
    assert!(result.is_ok());

    drop(result);
    workers.stop_all(Duration::from_secs(5)).unwrap();
}
