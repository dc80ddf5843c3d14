//! Random activate / release / pause / resume / prepare / drop from several
//! threads at once, checking the invariants of a safe state while it is
//! held, and that everything returns to rest at the end.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::PATIENCE;
use nu_coord::{
    Admission, BackgroundTask, BackgroundWorkers, Outcome, Scope, TaskError, Unit, WorkCoordinator,
    WorkerCounter, WorkerKind, WorkerOptions,
};

/// Work that says when it is doing something a safe state must not see:
/// `busy` is non-zero exactly while some unit is outside a checkpoint.
struct Churn {
    busy: Arc<AtomicUsize>,
    done: Arc<AtomicUsize>,
}

fn spin(rounds: u32) {
    for _ in 0..rounds {
        std::hint::spin_loop();
    }
}

impl BackgroundTask for Churn {
    type Item = u32;

    fn next_item(&mut self, _: &Unit<'_>) -> Result<Option<u32>, TaskError> {
        self.busy.fetch_add(1, Ordering::SeqCst);
        spin(50);
        self.busy.fetch_sub(1, Ordering::SeqCst);
        Ok(Some(fastrand::u32(0..4)))
    }

    fn describe(&self, item: &u32) -> String {
        format!("{item} checkpoints")
    }

    fn run_item(&mut self, checkpoints: u32, unit: &Unit<'_>) -> Result<Outcome, TaskError> {
        for _ in 0..=checkpoints {
            self.busy.fetch_add(1, Ordering::SeqCst);
            spin(200);
            self.busy.fetch_sub(1, Ordering::SeqCst);
            if unit.checkpoint().is_shutdown() {
                return Err("shutdown".into());
            }
            // Work that touches nothing guarded (not counted as busy) may
            // overlap a safe state; what follows it may not.
            let (_, checkpoint) = unit.parked(|| spin(300));
            if checkpoint.is_shutdown() {
                return Err("shutdown".into());
            }
        }
        self.done.fetch_add(1, Ordering::SeqCst);
        match checkpoints {
            0 => Err("an unlucky item".into()),
            _ => Ok(Outcome::new("ok")),
        }
    }
}

#[test]
fn random_operations_keep_every_invariant() {
    let counter = WorkerCounter::new();
    let workers = BackgroundWorkers::new(&counter);
    let worker_busy = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let names: Vec<String> = (0..4).map(|i| format!("worker-{i}")).collect();
    for name in &names {
        let task = Churn {
            busy: worker_busy.clone(),
            done: done.clone(),
        };
        workers
            .register(name.clone(), task, WorkerOptions::default())
            .unwrap();
    }
    workers.start_all().unwrap();
    let coordinator = WorkCoordinator::new(&counter, &workers);
    let orchestrators_busy = Arc::new(AtomicUsize::new(0));
    let safe_states_reached = Arc::new(AtomicUsize::new(0));

    let threads: Vec<_> = (0..4)
        .map(|t| {
            let counter = counter.clone();
            let workers = workers.clone();
            let coordinator = coordinator.clone();
            let names = names.clone();
            let worker_busy = worker_busy.clone();
            let orchestrators_busy = orchestrators_busy.clone();
            let reached = safe_states_reached.clone();
            thread::spawn(move || {
                let mut rng = fastrand::Rng::with_seed(t);
                for _ in 0..2000 {
                    match rng.u32(0..10) {
                        0..=3 => {
                            // An exchange.
                            let token = counter.token(WorkerKind::Orchestrator);
                            let admission = if rng.bool() {
                                Admission::Refuse
                            } else {
                                Admission::Wait(Duration::from_millis(rng.u64(0..5)))
                            };
                            if token.activate_with(admission).is_ok() {
                                orchestrators_busy.fetch_add(1, Ordering::SeqCst);
                                spin(rng.u32(0..2000));
                                orchestrators_busy.fetch_sub(1, Ordering::SeqCst);
                                if rng.bool() {
                                    token.release();
                                }
                                // Otherwise the drop releases it.
                            }
                        }
                        4 | 5 => {
                            // A user pauses or resumes a worker by hand.
                            let name = &names[rng.usize(0..names.len())];
                            if rng.bool() {
                                workers.pause(name).unwrap();
                            } else {
                                workers.resume(name).unwrap();
                            }
                        }
                        _ => {
                            // A backup or an editor.
                            let timeout = Duration::from_millis(rng.u64(0..20));
                            if let Ok(safe) = coordinator.prepare_for_backup(timeout) {
                                reached.fetch_add(1, Ordering::SeqCst);
                                for _ in 0..3 {
                                    assert_eq!(
                                        counter.active_count(WorkerKind::Orchestrator),
                                        0,
                                        "an orchestrator inside a safe state"
                                    );
                                    assert_eq!(orchestrators_busy.load(Ordering::SeqCst), 0);
                                    assert_eq!(
                                        worker_busy.load(Ordering::SeqCst),
                                        0,
                                        "a worker doing work inside a safe state"
                                    );
                                    assert!(workers.all_parked());
                                    assert!(!counter.is_admitting(WorkerKind::Orchestrator));
                                    spin(500);
                                }
                                drop(safe);
                            }
                        }
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }

    // At rest: no safe state, admission open, no orchestrator counted.
    let status = coordinator.status();
    assert_eq!(status.safe_states, 0);
    assert!(status.admitting);
    assert_eq!(status.orchestrators, 0);
    assert_eq!(status.background_workers, names.len());
    let reached = safe_states_reached.load(Ordering::SeqCst);
    eprintln!("safe states reached: {reached}");
    assert!(reached > 0);

    // Only the users' own pauses remain; lifting them lets work go on.
    workers.resume_all();
    assert!(!workers.all_paused() || names.is_empty());
    let before = done.load(Ordering::SeqCst);
    assert!(common::wait_for(|| done.load(Ordering::SeqCst) > before));

    workers.stop_all(PATIENCE).unwrap();
    assert!(counter.is_idle(Scope::All));
    for status in workers.statuses() {
        assert!(!status.paused);
        assert_eq!(status.total, status.completed + status.failed);
    }
}
