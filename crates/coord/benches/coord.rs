//! Criterion benchmarks of the hot paths, against the seed port and, for
//! token pairs, tokio-util's `TaskTracker`.
//!
//! `cargo bench -p nu-coord`. For the whole comparison with targets, run
//! the `bench_report` example instead.

mod seed;

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use nu_coord::{
    BackgroundTask, BackgroundWorkers, CountsMirror, Outcome, Shutdown, TaskError, Unit,
    WorkCoordinator, WorkerCounter, WorkerKind, WorkerOptions, WorkerToken,
};
use seed::{SeedCounter, SeedKind, SeedToken};
use tokio_util::task::TaskTracker;

/// Activate + release of one orchestrator token.
fn token_pair(c: &mut Criterion) {
    let mut group = c.benchmark_group("token_pair");

    let counter = WorkerCounter::new();
    let token = counter.token(WorkerKind::Orchestrator);
    group.bench_function("ours", |b| {
        b.iter(|| {
            let token = black_box(&token);
            token.activate().expect("admitted");
            black_box(token.release())
        });
    });

    let dir = tempfile::tempdir().expect("temp dir");
    let mirrored = WorkerCounter::new();
    let _mirror = CountsMirror::open(&mirrored, dir.path().join("bench.db")).expect("mirror");
    let token = mirrored.token(WorkerKind::Orchestrator);
    group.bench_function("ours_mirrored", |b| {
        b.iter(|| {
            let token = black_box(&token);
            token.activate().expect("admitted");
            black_box(token.release())
        });
    });

    let tracker = TaskTracker::new();
    group.bench_function("peer_task_tracker", |b| {
        b.iter(|| drop(black_box(tracker.token())));
    });

    let history = Arc::new(SeedCounter::open_temp().expect("seed database"));
    let seed_token = SeedToken::new(&history, SeedKind::Orchestrator, false, None);
    group.bench_function("seed", |b| {
        b.iter(|| {
            let token = black_box(&seed_token);
            token.activate().expect("seed activate");
            token.release().expect("seed release");
        });
    });

    group.finish();
}

/// A checkpoint of a pausable token that is not paused.
fn check_pause_not_paused(c: &mut Criterion) {
    let mut group = c.benchmark_group("check_pause_not_paused");

    let counter = WorkerCounter::new();
    let token = WorkerToken::pausable(&counter, WorkerKind::BackgroundWorker);
    token.activate().expect("admitted");
    let shutdown = Shutdown::new();
    group.bench_function("ours", |b| {
        b.iter(|| black_box(&token).check_pause(&shutdown));
    });

    let history = Arc::new(SeedCounter::open_temp().expect("seed database"));
    let seed_token = SeedToken::new(&history, SeedKind::BackgroundWorker, true, None);
    seed_token.activate().expect("seed activate");
    let flag = AtomicBool::new(false);
    group.bench_function("seed", |b| {
        b.iter(|| black_box(&seed_token).check_pause(|| flag.load(Ordering::Relaxed)));
    });

    group.finish();
}

/// A task with nothing to do.
struct Idle;

impl BackgroundTask for Idle {
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

/// Reaching and ending a safe state with three idle workers and no
/// orchestrators.
fn prepare_for_backup(c: &mut Criterion) {
    let mut group = c.benchmark_group("prepare_for_backup_3_idle");

    let counter = WorkerCounter::new();
    let workers = BackgroundWorkers::new(&counter);
    let options = WorkerOptions::default().idle_interval(Duration::from_secs(3600));
    for name in ["summaries", "exchanges", "embeddings"] {
        workers
            .register(name, Idle, options.clone())
            .expect("register");
    }
    workers.start_all().expect("start");
    thread::sleep(Duration::from_millis(20));
    let coordinator = WorkCoordinator::new(&counter, &workers);
    group.bench_function("ours", |b| {
        b.iter(|| {
            let safe = coordinator
                .prepare_for_backup(Duration::from_secs(10))
                .expect("safe state");
            drop(black_box(safe));
        });
    });
    group.finish();
    workers.stop_all(Duration::from_secs(10)).expect("stop");
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    targets = token_pair, check_pause_not_paused, prepare_for_backup
}
criterion_main!(benches);
