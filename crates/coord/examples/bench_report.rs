//! Measures `nu-coord` ("ours") against a port of the seed design it
//! reimplements ("seed") and, where one exists, against a general-purpose
//! peer (tokio-util's `TaskTracker`), all in one run, and checks each
//! figure against its target.
//!
//! ```text
//! cargo run --release -p nu-coord --example bench_report            # a table
//! cargo run --release -p nu-coord --example bench_report -- --json  # one JSON object per metric
//! ```
//!
//! `ratio` is seed / ours (how many times better ours is, for figures where
//! lower is better); `peer_ratio` is ours / peer (at most 1 means ours is as
//! fast as the peer). The command exits with status 0 whether or not every
//! target is met; a missed target is marked FAIL.

#[path = "../benches/seed/mod.rs"]
mod seed;

use std::hint::black_box;
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use nu_coord::{
    read_counts, BackgroundTask, BackgroundWorkers, CountsMirror, Outcome, Shutdown, TaskError,
    Unit, WorkCoordinator, Worker, WorkerCounter, WorkerKind, WorkerOptions, WorkerToken,
};
use rusqlite::Connection;
use seed::{
    SeedCoordinator, SeedCounter, SeedKind, SeedManager, SeedShutdown, SeedTask, SeedToken,
};
use tokio_util::task::TaskTracker;

/// Result type of the measuring functions.
type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// How many timed runs the nanosecond figures take the median of.
const RUNS: usize = 5;

/// A long timeout for waits that are expected to succeed quickly.
const LONG: Duration = Duration::from_secs(10);

/// An idle interval long enough that idle workers never wake on their own
/// during the report.
const HOUR: Duration = Duration::from_secs(3600);

// ---------------------------------------------------------------------------
// Statistics
// ---------------------------------------------------------------------------

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    let n = samples.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        samples[n / 2]
    } else {
        (samples[n / 2 - 1] + samples[n / 2]) / 2.0
    }
}

/// Nearest-rank percentile.
fn percentile(mut samples: Vec<f64>, pct: usize) -> f64 {
    samples.sort_by(f64::total_cmp);
    if samples.is_empty() {
        return f64::NAN;
    }
    let rank = (pct * samples.len()).div_ceil(100).max(1);
    samples[rank - 1]
}

fn max(samples: &[f64]) -> f64 {
    samples.iter().copied().fold(f64::NAN, f64::max)
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Runs `op` a tenth of `iters` times untimed (warm-up), then `iters` times
/// in each of `RUNS` timed runs,
/// and returns the median time per call in nanoseconds.
fn ns_per_op(iters: u64, mut op: impl FnMut()) -> f64 {
    for _ in 0..iters.div_ceil(10) {
        op();
    }
    let runs = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..iters {
                op();
            }
            start.elapsed().as_nanos() as f64 / iters as f64
        })
        .collect();
    median(runs)
}

/// Runs `op` from two threads at once, each with its own state from
/// `make`, `iters` times per thread, `RUNS` times; returns the median of
/// the per-run average over both threads of (elapsed / iters), in
/// nanoseconds.
fn ns_per_op_2t<M, F>(iters: u64, make: M) -> f64
where
    M: Fn() -> F + Sync,
    F: FnMut(),
{
    let runs = (0..=RUNS)
        .map(|_| {
            let barrier = Barrier::new(2);
            let per_thread: Vec<f64> = thread::scope(|s| {
                let handles: Vec<_> = (0..2)
                    .map(|_| {
                        let (barrier, make) = (&barrier, &make);
                        s.spawn(move || {
                            let mut op = make();
                            barrier.wait();
                            let start = Instant::now();
                            for _ in 0..iters {
                                op();
                            }
                            start.elapsed().as_nanos() as f64 / iters as f64
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("bench thread"))
                    .collect()
            });
            per_thread.iter().sum::<f64>() / per_thread.len() as f64
        })
        .collect::<Vec<f64>>();
    // The first run warms up.
    median(runs[1..].to_vec())
}

// ---------------------------------------------------------------------------
// Rows
// ---------------------------------------------------------------------------

struct Row {
    metric: &'static str,
    unit: &'static str,
    ours: f64,
    seed: f64,
    peer: Option<f64>,
    target: String,
    pass: bool,
}

impl Row {
    /// seed / ours.
    fn ratio(&self) -> f64 {
        self.seed / self.ours
    }

    /// ours / peer.
    fn peer_ratio(&self) -> Option<f64> {
        self.peer.map(|peer| self.ours / peer)
    }

    /// One JSON object, its fields in a fixed order.
    fn json(&self) -> String {
        use serde_json::{json, Value};
        let mut fields: Vec<(&str, Value)> = vec![
            ("metric", json!(self.metric)),
            ("unit", json!(self.unit)),
            ("ours", finite(self.ours)),
            ("seed", finite(self.seed)),
            ("ratio", finite(self.ratio())),
        ];
        if let (Some(peer), Some(peer_ratio)) = (self.peer, self.peer_ratio()) {
            fields.push(("peer", finite(peer)));
            fields.push(("peer_ratio", finite(peer_ratio)));
        }
        fields.push(("target", json!(self.target)));
        fields.push(("pass", json!(self.pass)));
        let body: Vec<String> = fields
            .iter()
            .map(|(key, value)| format!("{}:{value}", json!(key)))
            .collect();
        format!("{{{}}}", body.join(","))
    }
}

/// Four decimal places are more than the measurements carry.
fn round(x: f64) -> f64 {
    (x * 1e4).round() / 1e4
}

fn finite(x: f64) -> serde_json::Value {
    if x.is_finite() {
        serde_json::json!(round(x))
    } else {
        serde_json::Value::Null
    }
}

fn num(x: f64) -> String {
    if !x.is_finite() {
        "-".to_owned()
    } else if x.abs() >= 1000.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else if x.abs() >= 0.1 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

fn print_line(cols: [&str; 9]) {
    println!(
        "{:<22} {:>4} {:>10} {:>10} {:>9} {:>9} {:>10}  {:<32} {}",
        cols[0], cols[1], cols[2], cols[3], cols[4], cols[5], cols[6], cols[7], cols[8]
    );
}

fn print_table(machine: &str, rows: &[Row], notes: &[String]) {
    println!("machine: {machine}");
    println!();
    print_line([
        "metric",
        "unit",
        "ours",
        "seed",
        "ratio",
        "peer",
        "peer_ratio",
        "target",
        "result",
    ]);
    println!("{}", "-".repeat(122));
    for row in rows {
        print_line([
            row.metric,
            row.unit,
            &num(row.ours),
            &num(row.seed),
            &num(row.ratio()),
            &row.peer.map_or("-".to_owned(), num),
            &row.peer_ratio().map_or("-".to_owned(), num),
            &row.target,
            if row.pass { "pass" } else { "FAIL" },
        ]);
    }
    let failed = rows.iter().filter(|r| !r.pass).count();
    println!();
    if failed == 0 {
        println!("all {} targets met", rows.len());
    } else {
        println!("FAIL: {failed} of {} targets missed", rows.len());
    }
    if !notes.is_empty() {
        println!();
        for note in notes {
            println!("note: {note}");
        }
    }
}

fn machine() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown cpu".to_owned());
    let cpus = thread::available_parallelism().map_or(0, |n| n.get());
    format!("{model}, {cpus} cpus")
}

// ---------------------------------------------------------------------------
// Token pairs
// ---------------------------------------------------------------------------

/// Activate + release of one orchestrator token, one thread, with the
/// counts mirrored to SQLite. Returns (ours, seed, peer) in ns.
fn token_pair() -> Res<(f64, f64, f64)> {
    let dir = tempfile::tempdir()?;
    let counter = WorkerCounter::new();
    let _mirror = CountsMirror::open(&counter, dir.path().join("ours.db"))?;
    let token = counter.token(WorkerKind::Orchestrator);
    let ours = ns_per_op(2_000_000, || {
        let token = black_box(&token);
        token.activate().expect("admitted");
        black_box(token.release());
    });

    // The seed: a database transaction in each of activate and release.
    let history = Arc::new(SeedCounter::open_temp()?);
    let seed_token = SeedToken::new(&history, SeedKind::Orchestrator, false, None);
    let seed = ns_per_op(2_000, || {
        let token = black_box(&seed_token);
        token.activate().expect("seed activate");
        token.release().expect("seed release");
    });

    let tracker = TaskTracker::new();
    let peer = ns_per_op(2_000_000, || drop(black_box(tracker.token())));
    Ok((ours, seed, peer))
}

/// The same from two threads at once on one counter, each with its own
/// token; per pair, averaged over the threads.
fn token_pair_2t() -> Res<(f64, f64, f64)> {
    let dir = tempfile::tempdir()?;
    let counter = WorkerCounter::new();
    let _mirror = CountsMirror::open(&counter, dir.path().join("ours.db"))?;
    let ours = ns_per_op_2t(1_000_000, || {
        let token = counter.token(WorkerKind::Orchestrator);
        move || {
            let token = black_box(&token);
            token.activate().expect("admitted");
            black_box(token.release());
        }
    });

    let history = Arc::new(SeedCounter::open_temp()?);
    let seed = ns_per_op_2t(1_000, || {
        let token = SeedToken::new(&history, SeedKind::Orchestrator, false, None);
        move || {
            let token = black_box(&token);
            token.activate().expect("seed activate");
            token.release().expect("seed release");
        }
    });

    let tracker = TaskTracker::new();
    let peer = ns_per_op_2t(1_000_000, || {
        let tracker = tracker.clone();
        move || drop(black_box(tracker.token()))
    });
    Ok((ours, seed, peer))
}

// ---------------------------------------------------------------------------
// check_pause, not paused
// ---------------------------------------------------------------------------

fn check_pause() -> Res<(f64, f64)> {
    let counter = WorkerCounter::new();
    let token = WorkerToken::pausable(&counter, WorkerKind::BackgroundWorker);
    token.activate()?;
    let shutdown = Shutdown::new();
    let ours = ns_per_op(100_000_000, || {
        let _ = black_box(black_box(&token).check_pause(&shutdown));
    });

    // The seed takes the token's mutex on every call.
    let history = Arc::new(SeedCounter::open_temp()?);
    let seed_token = SeedToken::new(&history, SeedKind::BackgroundWorker, true, None);
    seed_token.activate()?;
    let flag = std::sync::atomic::AtomicBool::new(false);
    let seed = ns_per_op(5_000_000, || {
        black_box(&seed_token).check_pause(|| flag.load(std::sync::atomic::Ordering::Relaxed));
    });
    Ok((ours, seed))
}

// ---------------------------------------------------------------------------
// Idle wake-up
// ---------------------------------------------------------------------------

/// Latencies (µs) from just before the last release to a blocked waiter's
/// return.
///
/// A waiter thread runs `wait` each time it is told to. Each iteration
/// `arm`s (makes the scope busy), tells the waiter to wait, sleeps a random
/// `settle` so the waiter is blocked (and, for a polling waiter, at a random
/// phase of its poll), takes the time and `release`s; the waiter takes the
/// time right after its wait returns.
fn wake_latencies<R>(
    iters: usize,
    settle: (Duration, Duration),
    mut wait: impl FnMut() + Send + 'static,
    mut arm: impl FnMut() -> R,
    mut release: impl FnMut(R),
) -> Vec<f64> {
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (woke_tx, woke_rx) = mpsc::channel::<Instant>();
    let waiter = thread::spawn(move || {
        while go_rx.recv().is_ok() {
            wait();
            let woke = Instant::now();
            if woke_tx.send(woke).is_err() {
                return;
            }
        }
    });
    let warm_up = (iters / 10).min(50);
    let mut samples = Vec::with_capacity(iters);
    for i in 0..warm_up + iters {
        let held = arm();
        go_tx.send(()).expect("waiter alive");
        let spread = settle.1.as_nanos() as u64;
        let jitter = if spread == 0 {
            0
        } else {
            fastrand::u64(0..spread)
        };
        thread::sleep(settle.0 + Duration::from_nanos(jitter));
        let released = Instant::now();
        release(held);
        let woke = woke_rx.recv().expect("waiter alive");
        if i >= warm_up {
            samples.push(micros(woke.saturating_duration_since(released)));
        }
    }
    drop(go_tx);
    waiter.join().expect("waiter thread");
    samples
}

/// Returns p99 of (ours, seed, peer) in µs, and a note with the medians.
fn idle_wake() -> Res<((f64, f64, f64), String)> {
    const FAST_SETTLE: (Duration, Duration) =
        (Duration::from_micros(200), Duration::from_micros(200));

    let counter = WorkerCounter::new();
    let token = counter.token(WorkerKind::Orchestrator);
    let ours = {
        let counter = counter.clone();
        wake_latencies(
            2000,
            FAST_SETTLE,
            move || assert!(counter.wait_for_idle(WorkerKind::Orchestrator, LONG)),
            || {
                token.activate().expect("admitted");
            },
            |()| {
                token.release();
            },
        )
    };

    // The seed polls every 50 ms: a random settle of up to one poll puts
    // the release at a random phase of it.
    let history = Arc::new(SeedCounter::open_temp()?);
    let seed_token = SeedToken::new(&history, SeedKind::Orchestrator, false, None);
    let seed = {
        let history = history.clone();
        wake_latencies(
            100,
            (Duration::from_micros(200), seed::POLL),
            move || {
                let idle = history.wait_for_idle(Some(SeedKind::Orchestrator), LONG);
                assert!(idle.expect("seed wait_for_idle"));
            },
            || seed_token.activate().expect("seed activate"),
            |()| seed_token.release().expect("seed release"),
        )
    };

    // The peer: `close` + `wait` on a current-thread runtime in the waiter
    // thread; the main thread drops the last token and reopens the tracker
    // before the next round.
    let tracker = TaskTracker::new();
    let peer = {
        let tracker_w = tracker.clone();
        let runtime = tokio::runtime::Builder::new_current_thread().build()?;
        wake_latencies(
            2000,
            FAST_SETTLE,
            move || runtime.block_on(tracker_w.wait()),
            || {
                tracker.reopen();
                let token = tracker.token();
                tracker.close();
                token
            },
            drop,
        )
    };
    let note = format!(
        "idle_wake_p99_us: medians: ours {} us, seed {} us, peer {} us",
        num(median(ours.clone())),
        num(median(seed.clone())),
        num(median(peer.clone())),
    );
    Ok((
        (
            percentile(ours, 99),
            percentile(seed, 99),
            percentile(peer, 99),
        ),
        note,
    ))
}

// ---------------------------------------------------------------------------
// Pause acknowledgement
// ---------------------------------------------------------------------------

/// A unit of work that never ends on its own: it reaches a checkpoint every
/// millisecond until shutdown.
struct Ticker;

impl BackgroundTask for Ticker {
    type Item = ();

    fn next_item(&mut self, _: &Unit<'_>) -> Result<Option<()>, TaskError> {
        Ok(Some(()))
    }

    fn describe(&self, _: &()) -> String {
        "ticking".to_owned()
    }

    fn run_item(&mut self, _: (), unit: &Unit<'_>) -> Result<Outcome, TaskError> {
        loop {
            thread::sleep(Duration::from_millis(1));
            // A checkpoint reports shutdown only when it was paused, so
            // the loop asks about shutdown itself as well.
            if unit.is_shutdown() || unit.checkpoint().is_shutdown() {
                return Ok(Outcome::default());
            }
        }
    }
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

/// A random pause of up to two ticks, so pauses land at random points of
/// the worker's 1 ms cycle.
fn random_gap() {
    thread::sleep(Duration::from_micros(fastrand::u64(0..2000)));
}

/// Returns p99 of (ours, seed parked, seed's own `wait_until_paused`) in µs.
fn pause_ack() -> Res<(f64, f64, f64)> {
    const ITERS: usize = 200;

    let counter = WorkerCounter::new();
    let worker = Worker::new("ticker", Ticker, &counter, WorkerOptions::default());
    worker.start()?;
    thread::sleep(Duration::from_millis(20));
    let mut ours = Vec::with_capacity(ITERS);
    for i in 0..ITERS + 10 {
        random_gap();
        let start = Instant::now();
        worker.pause();
        let parked = worker.wait_until_paused(LONG);
        let took = start.elapsed();
        assert!(parked, "the worker parks");
        worker.resume();
        if i >= 10 {
            ours.push(micros(took));
        }
    }
    worker.stop(LONG)?;

    // The seed: the same worker shape (1 ms of work, then `check_pause`).
    // What counts is when the worker really blocks in `check_pause`, which
    // the measuring hook reports. The seed's own `wait_until_paused`
    // returns earlier: it sees the flag that `pause` itself just set, and
    // says nothing about the worker. Both are recorded; only the first is
    // the figure.
    let history = Arc::new(SeedCounter::open_temp()?);
    let shutdown = Arc::new(SeedShutdown::default());
    let (parked_tx, parked_rx) = mpsc::channel();
    let task = SeedTask::new(&history, &shutdown, "ticker", HOUR, || {
        thread::sleep(Duration::from_millis(1));
        true
    })
    .on_park(parked_tx);
    task.start_worker();
    thread::sleep(Duration::from_millis(20));
    let mut seed_parked = Vec::with_capacity(ITERS);
    let mut seed_own = Vec::with_capacity(ITERS);
    for i in 0..ITERS + 10 {
        random_gap();
        let start = Instant::now();
        task.pause();
        let own = task.wait_until_paused(LONG);
        let own_took = start.elapsed();
        assert!(own, "the seed's wait reports paused");
        let parked_at = parked_rx.recv_timeout(LONG)?;
        task.resume();
        if i >= 10 {
            seed_parked.push(micros(parked_at.saturating_duration_since(start)));
            seed_own.push(micros(own_took));
        }
    }
    shutdown.request();
    task.join();

    Ok((
        percentile(ours, 99),
        percentile(seed_parked, 99),
        percentile(seed_own, 99),
    ))
}

// ---------------------------------------------------------------------------
// pause_all over 1000 workers
// ---------------------------------------------------------------------------

fn pause_all_1000() -> Res<(f64, f64)> {
    const WORKERS: usize = 1000;
    const REPS: usize = 5;

    let counter = WorkerCounter::new();
    let workers = BackgroundWorkers::new(&counter);
    for i in 0..WORKERS {
        workers.register(
            format!("idle-{i:04}"),
            Idle,
            WorkerOptions::default().idle_interval(HOUR),
        )?;
    }
    workers.start_all()?;
    let mut ours = Vec::with_capacity(REPS);
    for rep in 0..=REPS {
        // Let every thread settle in its idle sleep (after the start, or
        // after the wake-up that resuming gives it).
        thread::sleep(Duration::from_millis(200));
        let start = Instant::now();
        workers.pause_all();
        let parked = workers.wait_until_all_paused(LONG);
        let took = start.elapsed();
        assert!(parked, "every worker parks");
        workers.resume_all();
        if rep > 0 {
            ours.push(millis(took));
        }
    }
    workers.stop_all(LONG)?;
    drop(workers);

    // The seed: pause_all sets each flag; wait_until_all_paused reads the
    // flags back. Neither waits for a worker to stop.
    let history = Arc::new(SeedCounter::open_temp()?);
    let shutdown = Arc::new(SeedShutdown::default());
    let tasks = (0..WORKERS)
        .map(|i| SeedTask::new(&history, &shutdown, &format!("idle-{i:04}"), HOUR, || false))
        .collect();
    let manager = SeedManager::new(tasks, &shutdown);
    manager.start_all();
    let mut seed = Vec::with_capacity(REPS);
    for rep in 0..=REPS {
        thread::sleep(Duration::from_millis(if rep == 0 { 200 } else { 20 }));
        let start = Instant::now();
        manager.pause_all();
        let paused = manager.wait_until_all_paused(LONG);
        let took = start.elapsed();
        assert!(paused, "the seed reports paused");
        manager.resume_all();
        if rep > 0 {
            seed.push(millis(took));
        }
    }
    manager.stop_all();
    Ok((median(ours), median(seed)))
}

// ---------------------------------------------------------------------------
// Safe state for a backup
// ---------------------------------------------------------------------------

/// Returns p99 of (ours, seed) in µs, and a note with the medians.
fn prepare_backup() -> Res<((f64, f64), String)> {
    const ITERS: usize = 500;
    const WARM_UP: usize = 20;
    // Untimed, between iterations: let the workers that the end of a safe
    // state woke go back to sleep.
    const GAP: Duration = Duration::from_micros(200);

    let counter = WorkerCounter::new();
    let workers = BackgroundWorkers::new(&counter);
    for name in ["summaries", "exchanges", "embeddings"] {
        workers.register(name, Idle, WorkerOptions::default().idle_interval(HOUR))?;
    }
    workers.start_all()?;
    thread::sleep(Duration::from_millis(20));
    let coordinator = WorkCoordinator::new(&counter, &workers);
    let mut ours = Vec::with_capacity(ITERS);
    for i in 0..WARM_UP + ITERS {
        thread::sleep(GAP);
        let start = Instant::now();
        let safe = coordinator.prepare_for_backup(LONG)?;
        drop(safe);
        let took = start.elapsed();
        if i >= WARM_UP {
            ours.push(micros(took));
        }
    }
    workers.stop_all(LONG)?;

    let history = Arc::new(SeedCounter::open_temp()?);
    let shutdown = Arc::new(SeedShutdown::default());
    let tasks = ["summaries", "exchanges", "embeddings"]
        .iter()
        .map(|name| SeedTask::new(&history, &shutdown, name, HOUR, || false))
        .collect();
    let manager = Arc::new(SeedManager::new(tasks, &shutdown));
    manager.start_all();
    thread::sleep(Duration::from_millis(20));
    let seed_coordinator = SeedCoordinator::new(&history, &manager);
    let mut seed = Vec::with_capacity(ITERS);
    for i in 0..WARM_UP + ITERS {
        thread::sleep(GAP);
        let start = Instant::now();
        let ready = seed_coordinator.prepare_for_backup(LONG)?;
        seed_coordinator.cleanup_after_backup();
        let took = start.elapsed();
        assert!(ready, "the seed reaches its safe state");
        if i >= WARM_UP {
            seed.push(micros(took));
        }
    }
    manager.stop_all();
    let note = format!(
        "prepare_backup_p99_us: medians: ours {} us, seed {} us",
        num(median(ours.clone())),
        num(median(seed.clone())),
    );
    Ok(((percentile(ours, 99), percentile(seed, 99)), note))
}

// ---------------------------------------------------------------------------
// Mirror lag
// ---------------------------------------------------------------------------

/// Polls `reader` every ~0.2 ms until it reads `count` orchestrators;
/// returns how long that took from `since`.
fn wait_for_count(reader: &Connection, count: usize, since: Instant) -> Res<Duration> {
    loop {
        if read_counts(reader)?.orchestrators == count {
            return Ok(since.elapsed());
        }
        if since.elapsed() > LONG {
            return Err(format!("the database never showed {count} orchestrators").into());
        }
        thread::sleep(Duration::from_micros(200));
    }
}

/// Worst time (ms, over a few bursts) until a second connection reads the
/// count a burst of activity ended on.
///
/// Each burst toggles one token between 0 and 1 many times, then leaves
/// 2..=5 tokens active; since the burst never reaches 2, the final count
/// can not be read early from a write made during the burst.
fn mirror_lag() -> Res<(f64, f64)> {
    const BURSTS: usize = 10;

    let dir = tempfile::tempdir()?;
    let path = dir.path().join("ours.db");
    let counter = WorkerCounter::new();
    let _mirror = CountsMirror::open(&counter, &path)?;
    let reader = Connection::open(&path)?;
    let burst = counter.token(WorkerKind::Orchestrator);
    let held: Vec<WorkerToken> = (0..5)
        .map(|_| counter.token(WorkerKind::Orchestrator))
        .collect();
    let mut ours = Vec::with_capacity(BURSTS);
    for rep in 0..BURSTS {
        let final_count = 2 + rep % 4;
        for _ in 0..10_000 {
            burst.activate()?;
            burst.release();
        }
        for token in &held[..final_count] {
            token.activate()?;
        }
        let ended = Instant::now();
        ours.push(millis(wait_for_count(&reader, final_count, ended)?));
        for token in &held[..final_count] {
            token.release();
        }
        wait_for_count(&reader, 0, Instant::now())?;
    }

    // The seed writes each change in its own transaction before the call
    // returns, so its lag is only the reader's own poll.
    let history = Arc::new(SeedCounter::open_temp()?);
    let reader = Connection::open(history.path())?;
    let burst = SeedToken::new(&history, SeedKind::Orchestrator, false, None);
    let held: Vec<SeedToken> = (0..5)
        .map(|_| SeedToken::new(&history, SeedKind::Orchestrator, false, None))
        .collect();
    let mut seed = Vec::with_capacity(BURSTS);
    for rep in 0..BURSTS {
        let final_count = 2 + rep % 4;
        for _ in 0..200 {
            burst.activate()?;
            burst.release()?;
        }
        for token in &held[..final_count] {
            token.activate()?;
        }
        let ended = Instant::now();
        seed.push(millis(wait_for_count(&reader, final_count, ended)?));
        for token in &held[..final_count] {
            token.release()?;
        }
        wait_for_count(&reader, 0, Instant::now())?;
    }
    Ok((max(&ours), max(&seed)))
}

// ---------------------------------------------------------------------------

fn main() -> Res<()> {
    let json = std::env::args().skip(1).any(|arg| arg == "--json");
    let machine = machine();
    let progress = |what: &str| {
        if !json {
            eprintln!("measuring {what} ...");
        }
    };
    if json {
        eprintln!("{}", serde_json::json!({ "machine": machine }));
    }

    let mut rows = Vec::new();
    let mut notes = Vec::new();

    progress("token_pair_ns");
    let (ours, seed, peer) = token_pair()?;
    let mut row = Row {
        metric: "token_pair_ns",
        unit: "ns",
        ours,
        seed,
        peer: Some(peer),
        target: "ratio >= 100, peer_ratio <= 1.5".to_owned(),
        pass: false,
    };
    row.pass = row.ratio() >= 100.0 && row.peer_ratio().is_some_and(|r| r <= 1.5);
    rows.push(row);

    progress("token_pair_2t_ns");
    let (ours, seed, peer) = token_pair_2t()?;
    let mut row = Row {
        metric: "token_pair_2t_ns",
        unit: "ns",
        ours,
        seed,
        peer: Some(peer),
        target: "ratio >= 30, peer_ratio <= 1.5".to_owned(),
        pass: false,
    };
    row.pass = row.ratio() >= 30.0 && row.peer_ratio().is_some_and(|r| r <= 1.5);
    rows.push(row);

    progress("check_pause_ns");
    let (ours, seed) = check_pause()?;
    rows.push(Row {
        metric: "check_pause_ns",
        unit: "ns",
        ours,
        seed,
        peer: None,
        target: "ours <= 2".to_owned(),
        pass: ours <= 2.0,
    });

    progress("idle_wake_p99_us");
    let ((ours, seed, peer), note) = idle_wake()?;
    notes.push(note);
    rows.push(Row {
        metric: "idle_wake_p99_us",
        unit: "us",
        ours,
        seed,
        peer: Some(peer),
        target: "ours <= 500".to_owned(),
        pass: ours <= 500.0,
    });

    progress("pause_ack_p99_us");
    let (ours, seed, seed_own) = pause_ack()?;
    rows.push(Row {
        metric: "pause_ack_p99_us",
        unit: "us",
        ours,
        seed,
        peer: None,
        target: "ours <= 2000".to_owned(),
        pass: ours <= 2000.0,
    });
    notes.push(format!(
        "pause_ack_p99_us: seed is measured until its worker really blocks in check_pause; \
         its own wait_until_paused returned after {} us (p99), before the worker had parked",
        num(seed_own)
    ));

    progress("pause_all_1000_ms");
    let (ours, seed) = pause_all_1000()?;
    rows.push(Row {
        metric: "pause_all_1000_ms",
        unit: "ms",
        ours,
        seed,
        peer: None,
        target: "ours <= 20".to_owned(),
        pass: ours <= 20.0,
    });
    notes.push(
        "pause_all_1000_ms: ours waits until every worker has parked; the seed's \
         wait_until_all_paused only reads back the flags its pause_all set"
            .to_owned(),
    );

    progress("prepare_backup_p99_us");
    let ((ours, seed), note) = prepare_backup()?;
    notes.push(note);
    rows.push(Row {
        metric: "prepare_backup_p99_us",
        unit: "us",
        ours,
        seed,
        peer: None,
        target: "ours <= 2000".to_owned(),
        pass: ours <= 2000.0,
    });

    progress("mirror_lag_ms");
    let (ours, seed) = mirror_lag()?;
    rows.push(Row {
        metric: "mirror_lag_ms",
        unit: "ms",
        ours,
        seed,
        peer: None,
        target: "ours <= 50 (informational)".to_owned(),
        pass: ours <= 50.0,
    });
    notes.push(
        "mirror_lag_ms: worst of 10 bursts; the seed writes every change synchronously, \
         so its figure is the reader's own poll"
            .to_owned(),
    );

    if json {
        for row in &rows {
            println!("{}", row.json());
        }
        for note in &notes {
            eprintln!("note: {note}");
        }
    } else {
        print_table(&machine, &rows, &notes);
    }
    Ok(())
}
