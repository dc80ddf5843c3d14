mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{scripted, wait_for, Step, A_MOMENT, PATIENCE};
use nu_coord::{Error, Worker, WorkerCounter, WorkerKind, WorkerOptions, WorkerState};

fn quick() -> WorkerOptions {
    WorkerOptions::default().idle_interval(Duration::from_secs(60))
}

#[test]
fn does_every_item_and_keeps_a_status() {
    let counter = WorkerCounter::new();
    let (task, handle) = scripted(vec![Step::Ok("a", 0.25), Step::Ok("b", 0.5)]);
    let worker = Worker::new("summaries", task, &counter, quick());
    assert_eq!(worker.status().state, WorkerState::Stopped);

    assert!(worker.start().unwrap());
    assert!(!worker.start().unwrap(), "already running");
    assert_eq!(counter.active_count(WorkerKind::BackgroundWorker), 1);
    assert!(handle.wait_done(2));
    assert!(wait_for(|| worker.status().state == WorkerState::Idle));

    let status = worker.status();
    assert_eq!(status.name, "summaries");
    assert!(status.running && status.enabled && !status.paused);
    assert_eq!((status.total, status.completed, status.failed), (2, 2, 0));
    assert_eq!(status.last_result.as_deref(), Some("b"));
    assert_eq!(status.current, None);
    assert_eq!(status.backlog, Some(0));
    assert!((status.spend - 0.75).abs() < 1e-9);
    assert_eq!(status.durations.samples, 2);
    assert!(status.durations.p50 <= status.durations.p99);

    assert!(worker.stop(PATIENCE).unwrap());
    assert!(!worker.stop(PATIENCE).unwrap(), "already stopped");
    assert_eq!(counter.active_count(WorkerKind::BackgroundWorker), 0);
    assert_eq!(worker.status().state, WorkerState::Stopped);
}

#[test]
fn failing_and_panicking_items_are_counted_and_the_worker_goes_on() {
    let counter = WorkerCounter::new();
    let (task, handle) = scripted(vec![
        Step::Fail("model unreachable"),
        Step::Panic("bad item"),
        Step::Ok("fine", 0.0),
    ]);
    let worker = Worker::new("embeddings", task, &counter, quick());
    worker.start().unwrap();
    assert!(handle.wait_done(3));
    assert!(wait_for(|| worker.status().completed == 1));
    let status = worker.status();
    assert_eq!((status.completed, status.failed), (1, 2));
    assert!(status.running);
    assert_eq!(counter.active_count(WorkerKind::BackgroundWorker), 1);
    worker.stop(PATIENCE).unwrap();
    assert_eq!(counter.active_count(WorkerKind::BackgroundWorker), 0);
}

#[test]
fn a_failed_item_reports_why() {
    let counter = WorkerCounter::new();
    let (task, handle) = scripted(vec![Step::Fail("model unreachable")]);
    let worker = Worker::new("embeddings", task, &counter, quick());
    worker.start().unwrap();
    assert!(handle.wait_done(1));
    assert!(wait_for(|| worker.status().failed == 1));
    assert_eq!(
        worker.status().last_result.as_deref(),
        Some("failed: model unreachable")
    );
}

#[test]
fn a_worker_inside_a_long_unit_is_not_paused_until_its_checkpoint() {
    let counter = WorkerCounter::new();
    let (task, handle) = scripted(vec![Step::Gated, Step::Ok("after", 0.0)]);
    let worker = Worker::new("summaries", task, &counter, quick());
    worker.start().unwrap();
    handle.entered.recv_timeout(PATIENCE).unwrap();

    assert!(worker.pause());
    assert!(!worker.wait_until_paused(A_MOMENT));
    assert!(!worker.is_parked());
    assert_eq!(worker.status().state, WorkerState::Pausing);
    assert_eq!(worker.status().current.as_deref(), Some("item 0"));

    // Let the unit reach its checkpoint: now it parks.
    handle.go.send(()).unwrap();
    assert!(worker.wait_until_paused(PATIENCE));
    assert_eq!(worker.status().state, WorkerState::Paused);

    // Paused means nothing more is done: the unit waits at the checkpoint.
    handle.go.send(()).unwrap();
    std::thread::sleep(A_MOMENT);
    assert!(handle.done().is_empty());

    assert!(worker.resume());
    assert!(handle.wait_done(2), "resume continues where it stopped");
    assert_eq!(handle.done(), ["0:ok", "1:ok"]);
    worker.stop(PATIENCE).unwrap();
}

#[test]
fn a_pause_between_units_holds_until_resumed() {
    let counter = WorkerCounter::new();
    let (task, handle) = scripted(vec![]);
    let worker = Worker::new("summaries", task, &counter, quick());
    worker.start().unwrap();
    assert!(wait_for(|| worker.status().state == WorkerState::Idle));

    worker.pause();
    assert!(
        worker.wait_until_paused(PATIENCE),
        "an idle worker is parked"
    );
    handle.push(Step::Ok("x", 0.0));
    worker.nudge();
    std::thread::sleep(A_MOMENT);
    assert!(handle.done().is_empty(), "no unit starts while paused");

    worker.resume();
    assert!(handle.wait_done(1));
    worker.stop(PATIENCE).unwrap();
}

#[test]
fn a_nudge_wakes_an_idle_worker_at_once() {
    let counter = WorkerCounter::new();
    let (task, handle) = scripted(vec![]);
    // An hour's idle interval: only the nudge can wake it within the test.
    let options = WorkerOptions::default().idle_interval(Duration::from_secs(3600));
    let worker = Worker::new("summaries", task, &counter, options);
    worker.start().unwrap();
    assert!(wait_for(|| worker.status().state == WorkerState::Idle));
    handle.push(Step::Ok("new", 0.0));
    worker.nudge();
    assert!(handle.wait_done(1));
    worker.stop(PATIENCE).unwrap();
}

#[test]
fn a_paused_worker_stops_at_once_and_keeps_its_pause_on_restart() {
    let counter = WorkerCounter::new();
    let (task, handle) = scripted(vec![]);
    let worker = Worker::new("summaries", task, &counter, quick());
    worker.start().unwrap();
    worker.pause();
    assert!(worker.wait_until_paused(PATIENCE));
    assert!(worker.stop(PATIENCE).unwrap());
    assert_eq!(counter.active_count(WorkerKind::BackgroundWorker), 0);

    handle.push(Step::Ok("x", 0.0));
    worker.start().unwrap();
    assert_eq!(counter.active_count(WorkerKind::BackgroundWorker), 1);
    assert!(worker.wait_until_paused(PATIENCE));
    std::thread::sleep(A_MOMENT);
    assert!(handle.done().is_empty(), "restarted paused");
    worker.resume();
    assert!(handle.wait_done(1));
    worker.stop(PATIENCE).unwrap();
}

#[test]
fn stop_is_bounded_and_says_why() {
    let counter = WorkerCounter::new();
    let (task, handle) = scripted(vec![Step::Gated]);
    let worker = Worker::new("summaries", task, &counter, quick());
    worker.start().unwrap();
    handle.entered.recv_timeout(PATIENCE).unwrap();

    let err = worker.stop(A_MOMENT).unwrap_err();
    assert!(matches!(err, Error::StopTimeout { .. }));
    assert!(err.to_string().contains("summaries"), "{err}");
    assert_eq!(worker.status().state, WorkerState::Stopping);
    assert!(matches!(worker.start(), Err(Error::StillStopping { .. })));

    handle.go.send(()).unwrap();
    handle.go.send(()).unwrap();
    // The thread, told to stop already, may be gone before this call.
    worker.stop(PATIENCE).unwrap();
    assert!(!worker.is_running());
    assert_eq!(counter.active_count(WorkerKind::BackgroundWorker), 0);
}

#[test]
fn disabled_workers_do_not_start() {
    let counter = WorkerCounter::new();
    let (task, _handle) = scripted(vec![]);
    let worker = Worker::new("summaries", task, &counter, quick());
    worker.start().unwrap();
    assert!(worker.disable(PATIENCE).unwrap());
    assert!(!worker.is_running());
    assert_eq!(worker.status().state, WorkerState::Disabled);
    assert!(matches!(worker.start(), Err(Error::Disabled { .. })));
    assert!(worker.enable());
    assert!(!worker.enable());
    assert_eq!(worker.status().state, WorkerState::Stopped);
    worker.start().unwrap();
    worker.stop(PATIENCE).unwrap();
}

#[test]
fn the_thread_carries_the_worker_name() {
    struct Named(Option<std::sync::mpsc::Sender<String>>);
    impl nu_coord::BackgroundTask for Named {
        type Item = ();
        fn next_item(&mut self, _: &nu_coord::Unit<'_>) -> Result<Option<()>, nu_coord::TaskError> {
            if let Some(tx) = self.0.take() {
                let name = std::thread::current().name().unwrap_or_default().to_owned();
                tx.send(name).unwrap();
            }
            Ok(None)
        }
        fn describe(&self, _: &()) -> String {
            String::new()
        }
        fn run_item(
            &mut self,
            _: (),
            _: &nu_coord::Unit<'_>,
        ) -> Result<nu_coord::Outcome, nu_coord::TaskError> {
            Ok(nu_coord::Outcome::default())
        }
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let counter = WorkerCounter::new();
    let worker = Worker::new("embedding_generator", Named(Some(tx)), &counter, quick());
    worker.start().unwrap();
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), "embedding_generator");
    worker.stop(PATIENCE).unwrap();
}

#[test]
fn a_long_unit_stops_at_its_next_checkpoint() {
    struct Forever(Option<std::sync::mpsc::Sender<()>>);
    impl nu_coord::BackgroundTask for Forever {
        type Item = ();
        fn next_item(&mut self, _: &nu_coord::Unit<'_>) -> Result<Option<()>, nu_coord::TaskError> {
            Ok(Some(()))
        }
        fn describe(&self, _: &()) -> String {
            "forever".into()
        }
        fn run_item(
            &mut self,
            _: (),
            unit: &nu_coord::Unit<'_>,
        ) -> Result<nu_coord::Outcome, nu_coord::TaskError> {
            if let Some(tx) = self.0.take() {
                tx.send(()).unwrap();
            }
            while !unit.checkpoint().is_shutdown() {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err("stopped".into())
        }
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let counter = WorkerCounter::new();
    let worker = Worker::new("forever", Forever(Some(tx)), &counter, quick());
    worker.start().unwrap();
    rx.recv_timeout(PATIENCE).unwrap();
    assert!(worker.stop(PATIENCE).unwrap());
    assert_eq!(counter.active_count(WorkerKind::BackgroundWorker), 0);
}

#[test]
fn a_nudger_wakes_the_worker_it_came_from() {
    let counter = WorkerCounter::new();
    let (task, handle) = scripted(vec![]);
    let options = WorkerOptions::default().idle_interval(Duration::from_secs(3600));
    let worker = Worker::new("summaries", task, &counter, options);
    let nudger = worker.nudger();
    worker.start().unwrap();
    assert!(wait_for(|| worker.status().state == WorkerState::Idle));
    handle.push(Step::Ok("new", 0.0));
    std::thread::spawn(move || nudger.nudge()).join().unwrap();
    assert!(handle.wait_done(1));
    worker.stop(PATIENCE).unwrap();
}

#[test]
fn the_start_hook_runs_on_the_worker_thread_at_each_start() {
    let (tx, rx) = std::sync::mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let options = quick().on_thread_start(move || {
        let name = std::thread::current().name().unwrap_or_default().to_owned();
        tx.lock().unwrap().send(name).unwrap();
    });
    let counter = WorkerCounter::new();
    let (task, _handle) = scripted(vec![]);
    let worker = Worker::new("hooked", task, &counter, options);
    worker.start().unwrap();
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), "hooked");
    worker.stop(PATIENCE).unwrap();
    worker.start().unwrap();
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), "hooked");
    worker.stop(PATIENCE).unwrap();
}

#[test]
fn a_worker_started_while_paused_is_parked_from_the_start() {
    let counter = WorkerCounter::new();
    let (task, handle) = scripted(vec![Step::Ok("x", 0.0)]);
    let worker = Worker::new("late", task, &counter, quick());
    let hold = worker.hold_pause();
    worker.start().unwrap();
    assert!(
        worker.is_parked(),
        "never counted as running under the hold"
    );
    std::thread::sleep(A_MOMENT);
    assert!(handle.done().is_empty());
    drop(hold);
    assert!(handle.wait_done(1));
    worker.stop(PATIENCE).unwrap();
}

#[test]
fn a_worker_stopped_during_a_pause_winds_down_still_parked() {
    let counter = WorkerCounter::new();
    let (task, handle) = scripted(vec![Step::Gated]);
    let worker = Worker::new("summaries", task, &counter, quick());
    worker.start().unwrap();
    handle.entered.recv_timeout(PATIENCE).unwrap();
    worker.pause();
    handle.go.send(()).unwrap(); // on to the checkpoint, where it parks
    assert!(worker.wait_until_paused(PATIENCE));

    worker.request_stop(); // the checkpoint returns "shutdown"
    std::thread::sleep(A_MOMENT);
    assert!(
        worker.is_parked(),
        "a stop must not make a paused worker run"
    );
    handle.go.send(()).unwrap(); // the unit returns, and the thread ends
    worker.stop(PATIENCE).unwrap();
    assert!(!worker.is_running());
    assert_eq!(handle.done(), ["0:err"]);
}

#[test]
fn a_unit_parked_around_slow_work_pauses_at_once_and_writes_only_after_resume() {
    struct Slow {
        started: std::sync::mpsc::Sender<()>,
        release: Arc<Mutex<std::sync::mpsc::Receiver<()>>>,
        wrote: Arc<AtomicBool>,
        once: bool,
    }
    impl nu_coord::BackgroundTask for Slow {
        type Item = ();
        fn next_item(&mut self, _: &nu_coord::Unit<'_>) -> Result<Option<()>, nu_coord::TaskError> {
            Ok(std::mem::take(&mut self.once).then_some(()))
        }
        fn describe(&self, _: &()) -> String {
            "slow".into()
        }
        fn run_item(
            &mut self,
            _: (),
            unit: &nu_coord::Unit<'_>,
        ) -> Result<nu_coord::Outcome, nu_coord::TaskError> {
            let (_, checkpoint) = unit.parked(|| {
                self.started.send(()).unwrap();
                self.release.lock().unwrap().recv().unwrap();
            });
            assert!(!checkpoint.is_shutdown());
            self.wrote.store(true, Ordering::SeqCst);
            Ok(nu_coord::Outcome::new("written"))
        }
    }
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel();
    let wrote = Arc::new(AtomicBool::new(false));
    let task = Slow {
        started: started_tx,
        release: Arc::new(Mutex::new(release_rx)),
        wrote: wrote.clone(),
        once: true,
    };
    let counter = WorkerCounter::new();
    let worker = Worker::new("slow", task, &counter, quick());
    worker.start().unwrap();
    started_rx.recv_timeout(PATIENCE).unwrap();

    // Mid-call: the pause takes effect at once.
    worker.pause();
    assert!(worker.wait_until_paused(Duration::ZERO));
    release_tx.send(()).unwrap();
    std::thread::sleep(A_MOMENT);
    assert!(!wrote.load(Ordering::SeqCst), "no write while paused");
    assert!(worker.is_parked());

    worker.resume();
    assert!(wait_for(|| wrote.load(Ordering::SeqCst)));
    worker.stop(PATIENCE).unwrap();
}
