mod common;

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::{scripted, wait_for, Nothing, Step, A_MOMENT, PATIENCE};
use nu_coord::{
    Admission, BackgroundWorkers, Error, Purpose, WorkCoordinator, WorkerCounter, WorkerKind,
    WorkerOptions,
};

struct Setup {
    counter: WorkerCounter,
    workers: BackgroundWorkers,
    coordinator: WorkCoordinator,
}

fn setup() -> Setup {
    let counter = WorkerCounter::new();
    let workers = BackgroundWorkers::new(&counter);
    for name in ["conversations", "exchanges", "embeddings"] {
        workers
            .register(name, Nothing, WorkerOptions::default())
            .unwrap();
    }
    workers.start_all().unwrap();
    let coordinator = WorkCoordinator::new(&counter, &workers);
    Setup {
        counter,
        workers,
        coordinator,
    }
}

#[test]
fn a_safe_state_pauses_workers_and_closes_admission_until_dropped() {
    let s = setup();
    let before = s.coordinator.status();
    assert_eq!((before.orchestrators, before.background_workers), (0, 3));
    assert!(!before.paused && before.admitting);
    assert_eq!(before.safe_states, 0);

    let safe = s.coordinator.prepare_for_backup(PATIENCE).unwrap();
    assert_eq!(safe.purpose(), Purpose::Backup);
    let during = s.coordinator.status();
    assert!(during.paused && during.parked && !during.admitting);
    assert_eq!(during.safe_states, 1);
    assert!(safe.reached_in() <= PATIENCE);

    let held = safe.release();
    assert!(held < PATIENCE);
    let after = s.coordinator.status();
    assert!(!after.paused && after.admitting);
    assert_eq!(after.safe_states, 0);
    s.workers.stop_all(PATIENCE).unwrap();
}

#[test]
fn a_timed_out_prepare_says_what_it_waited_on_and_undoes_only_its_own_pause() {
    let counter = WorkerCounter::new();
    let workers = BackgroundWorkers::new(&counter);
    let (task, handle) = scripted(vec![Step::Gated]);
    workers
        .register("embeddings", task, WorkerOptions::default())
        .unwrap();
    workers
        .register("summaries", Nothing, WorkerOptions::default())
        .unwrap();
    workers.start_all().unwrap();
    handle.entered.recv_timeout(PATIENCE).unwrap();
    // The user paused the summaries by hand.
    workers.pause("summaries").unwrap();

    let exchange = counter.token(WorkerKind::Orchestrator);
    exchange.activate().unwrap();

    let coordinator = WorkCoordinator::new(&counter, &workers);
    let err = coordinator
        .prepare_for_backup(Duration::from_millis(200))
        .unwrap_err();
    let Error::NotSafe(not_safe) = &err else {
        panic!("expected NotSafe, got {err:?}");
    };
    assert_eq!(not_safe.orchestrators(), 1);
    assert_eq!(not_safe.workers_in_unit(), ["embeddings"]);
    assert_eq!(
        err.to_string(),
        "could not reach a safe state for backup within 200ms: 1 exchange still running; \
         embeddings: still in a unit of work. Nothing was changed"
    );

    // Left as found: admission open, embeddings not paused, summaries
    // still paused by the user.
    let status = coordinator.status();
    assert!(status.admitting);
    assert_eq!(status.safe_states, 0);
    assert!(!workers.status("embeddings").unwrap().paused);
    assert!(workers.status("summaries").unwrap().paused);
    assert!(exchange.is_active());

    handle.go.send(()).unwrap();
    handle.go.send(()).unwrap();
    assert!(handle.wait_done(1));
    assert_eq!(handle.done(), ["0:ok"], "the unit was never paused");
    workers.stop_all(PATIENCE).unwrap();
}

#[test]
fn one_deadline_covers_every_step() {
    let counter = WorkerCounter::new();
    let workers = BackgroundWorkers::new(&counter);
    let (task, handle) = scripted(vec![Step::Gated]);
    workers
        .register("embeddings", task, WorkerOptions::default())
        .unwrap();
    workers.start_all().unwrap();
    handle.entered.recv_timeout(PATIENCE).unwrap();
    let exchange = counter.token(WorkerKind::Orchestrator);
    exchange.activate().unwrap();

    let coordinator = WorkCoordinator::new(&counter, &workers);
    let timeout = Duration::from_millis(1000);
    // The exchange ends half-way through the timeout; the rest of the
    // timeout is spent waiting for the worker, not a fresh timeout.
    let releaser = thread::spawn(move || {
        thread::sleep(Duration::from_millis(500));
        drop(exchange);
    });
    let started = std::time::Instant::now();
    let err = coordinator.prepare_for_backup(timeout).unwrap_err();
    let took = started.elapsed();
    releaser.join().unwrap();
    let Error::NotSafe(not_safe) = err else {
        panic!("expected NotSafe");
    };
    assert_eq!(not_safe.orchestrators(), 0);
    assert_eq!(not_safe.workers_in_unit(), ["embeddings"]);
    // Generous: the point is that it is not 1.5 or 2 timeouts.
    assert!(
        took < timeout * 3 / 2,
        "took {took:?} for a {timeout:?} timeout"
    );
    handle.go.send(()).unwrap();
    handle.go.send(()).unwrap();
    workers.stop_all(PATIENCE).unwrap();
}

#[test]
fn overlapping_safe_states_resume_workers_only_when_both_end() {
    let s = setup();
    let editor = s.coordinator.prepare_for_external_editor(PATIENCE).unwrap();
    let backup = s.coordinator.prepare_for_backup(PATIENCE).unwrap();
    assert_eq!(s.coordinator.status().safe_states, 2);

    drop(editor);
    let status = s.coordinator.status();
    assert!(status.paused && !status.admitting, "the backup still holds");
    drop(backup);
    let status = s.coordinator.status();
    assert!(!status.paused && status.admitting);
    s.workers.stop_all(PATIENCE).unwrap();
}

#[test]
fn the_users_pause_survives_a_safe_state() {
    let s = setup();
    s.workers.pause("embeddings").unwrap();
    let safe = s.coordinator.prepare_for_backup(PATIENCE).unwrap();
    drop(safe);
    let paused: Vec<_> = s
        .workers
        .statuses()
        .into_iter()
        .filter(|w| w.paused)
        .map(|w| w.name)
        .collect();
    assert_eq!(paused, ["embeddings"]);
    s.workers.stop_all(PATIENCE).unwrap();
}

#[test]
fn orchestrators_asking_for_admission_wait_or_are_refused_as_asked() {
    let s = setup();
    let safe = s.coordinator.prepare_for_backup(PATIENCE).unwrap();

    let refused = s.counter.token(WorkerKind::Orchestrator);
    let err = refused.activate_with(Admission::Refuse).unwrap_err();
    assert!(matches!(err, Error::AdmissionClosed { .. }));

    let (tx, rx) = mpsc::channel();
    let waiter = {
        let counter = s.counter.clone();
        thread::spawn(move || {
            let token = counter.token(WorkerKind::Orchestrator);
            let result = token.activate_with(Admission::Wait(PATIENCE));
            tx.send(()).unwrap();
            result.map(|_| token)
        })
    };
    assert!(rx.recv_timeout(A_MOMENT).is_err(), "still waiting");
    assert_eq!(s.counter.active_count(WorkerKind::Orchestrator), 0);
    drop(safe);
    let token = waiter.join().unwrap().unwrap();
    assert!(token.is_active());
    s.workers.stop_all(PATIENCE).unwrap();
}

#[test]
fn a_prepare_does_not_start_new_work_while_it_waits() {
    let s = setup();
    let running = s.counter.token(WorkerKind::Orchestrator);
    running.activate().unwrap();
    let prepare = {
        let coordinator = s.coordinator.clone();
        thread::spawn(move || {
            coordinator
                .prepare_for_backup(PATIENCE)
                .map(|g| g.release())
        })
    };
    // Admission closes as soon as the prepare starts waiting.
    assert!(wait_for(|| !s
        .counter
        .is_admitting(WorkerKind::Orchestrator)));
    let late = s.counter.token(WorkerKind::Orchestrator);
    assert!(late.activate().is_err());
    drop(running);
    prepare.join().unwrap().unwrap();
    assert!(late.activate().unwrap());
    s.workers.stop_all(PATIENCE).unwrap();
}

#[test]
fn a_panicking_worker_unit_and_orchestrator_leave_counts_right() {
    let counter = WorkerCounter::new();
    let workers = BackgroundWorkers::new(&counter);
    let (task, handle) = scripted(vec![Step::Panic("boom"), Step::Ok("next", 0.0)]);
    workers
        .register("embeddings", task, WorkerOptions::default())
        .unwrap();
    workers.start_all().unwrap();
    assert!(handle.wait_done(2));

    let counter2 = counter.clone();
    let result = thread::spawn(move || {
        let token = counter2.token(WorkerKind::Orchestrator);
        token.activate().unwrap();
        panic!("the model crashed");
    })
    .join();
    assert!(result.is_err());

    let coordinator = WorkCoordinator::new(&counter, &workers);
    let status = coordinator.status();
    assert_eq!((status.orchestrators, status.background_workers), (0, 1));
    assert!(coordinator.prepare_for_backup(PATIENCE).is_ok());
    workers.stop_all(PATIENCE).unwrap();
    assert_eq!(counter.all_counts().total(), 0);
}

#[test]
fn a_coordinator_without_workers_still_waits_for_orchestrators() {
    let counter = WorkerCounter::new();
    let coordinator = WorkCoordinator::new(&counter, &BackgroundWorkers::new(&counter));
    let safe = coordinator
        .prepare_for_external_editor(Duration::ZERO)
        .unwrap();
    assert_eq!(safe.purpose(), Purpose::ExternalEditor);
    drop(safe);
    let token = counter.token(WorkerKind::Orchestrator);
    token.activate().unwrap();
    let err = coordinator
        .prepare(Purpose::Maintenance, Duration::ZERO)
        .unwrap_err();
    assert!(err.to_string().contains("for maintenance"), "{err}");
}
