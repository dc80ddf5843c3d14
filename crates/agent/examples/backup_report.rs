//! Measures `/backup` on a history of a chosen size while the background
//! workers are busy, against a plain copy of the same file.
//!
//! ```text
//! cargo run --release -p nu-agent --example backup_report -- --size-mb 64 [--json]
//! ```
//!
//! Builds a history database of about N MiB whose exchanges all wait for
//! summaries, starts the three workers on it with the local model, and
//! once they are busy runs the backup exactly as `/backup` does. Then it
//! stops the workers and times a plain copy of the now quiescent file plus
//! `fsync`, in the same run, on the same disk.
//!
//! Prints a table, or with `--json` one JSON object per line:
//! `pause_window_ms` (workers paused and exchanges held back),
//! `backup_ms` (the copy into the temporary file, synced), `verify_ms`,
//! `copy_ms` (the plain copy) and `backup_copy_ratio`. Each is measured
//! three times after a `sync`; the pause window reported is the worst of
//! the three, the others are medians.

use std::fs::File;
use std::path::Path;
use std::sync::atomic::AtomicI64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nu_agent::backup::{self, Options};
use nu_agent::db::{self, failed_jobs::RetryPolicy};
use nu_agent::model::local::LocalModel;
use nu_agent::model::Cancel;
use nu_agent::workers::{self, Setup};
use nu_coord::{BackgroundWorkers, WorkCoordinator, WorkerCounter};
use rusqlite::params;

struct Args {
    size_mb: u64,
    json: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut size_mb = 64;
    let mut json = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--json" => json = true,
            "--size-mb" => {
                let value = args.next().ok_or("--size-mb needs a number")?;
                size_mb = value
                    .parse()
                    .map_err(|_| format!("--size-mb: {value:?} is not a whole number"))?;
            }
            "--help" | "-h" => {
                return Err("usage: backup_report [--size-mb N] [--json]".to_owned());
            }
            other => return Err(format!("unknown argument {other:?}; see --help")),
        }
    }
    if size_mb == 0 {
        return Err("--size-mb must be at least 1".to_owned());
    }
    Ok(Args { size_mb, json })
}

/// Deterministic filler text, so runs are comparable.
fn filler(seed: u64, len: usize) -> String {
    const WORDS: [&str; 16] = [
        "backup",
        "snapshot",
        "worker",
        "summary",
        "database",
        "pause",
        "exchange",
        "model",
        "embedding",
        "history",
        "safe",
        "state",
        "copy",
        "verify",
        "page",
        "lemon",
    ];
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = String::with_capacity(len + 16);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.push_str(WORDS[(state % 16) as usize]);
        out.push(' ');
    }
    out
}

/// Fills a new database with completed exchanges until it holds about
/// `size_mb` MiB. Returns the number of exchanges.
fn build_history(path: &Path, size_mb: u64) -> rusqlite::Result<u64> {
    let mut conn = db::open(path).expect("a new database opens");
    let target = size_mb * 1024 * 1024;
    let conversation = db::start_conversation(&conn)?;
    let mut n = 0u64;
    while nu_agent::app::db_size(path) < target {
        let tx = conn.transaction()?;
        // About 8 MiB per round.
        {
            let mut exchange = tx.prepare_cached(
                "INSERT INTO exchanges (conversation_id, status, user_input, reply, model,
                                        started_at, ended_at)
                 VALUES (?1, 'completed', ?2, ?3, 'local', ?4, ?4)",
            )?;
            let mut message = tx.prepare_cached(
                "INSERT INTO messages (conversation_id, exchange_id, role, content, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for _ in 0..2000 {
                n += 1;
                let input = filler(n, 600);
                let reply = filler(n + 1_000_000_007, 1400);
                let now = db::now_ms();
                exchange.execute(params![conversation, input, reply, now])?;
                let id = tx.last_insert_rowid();
                message.execute(params![conversation, id, "user", input, now])?;
                message.execute(params![conversation, id, "assistant", reply, now])?;
            }
        }
        tx.execute(
            "UPDATE conversations SET last_completed_at = ?2 WHERE id = ?1",
            params![conversation, db::now_ms()],
        )?;
        tx.commit()?;
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")?;
    }
    Ok(n)
}

/// Runs of each measurement; medians are reported (the worst, for the
/// pause window).
const RUNS: usize = 3;

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

/// Flushes every file system's dirty data before a timed run, so that no
/// run pays for writing out what an earlier step left in memory (on ext4
/// an `fsync` commits the whole journal, other files' data included).
fn settle_disk() {
    let _ = std::process::Command::new("sync").status();
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db_path = dir.path().join("history.db");

    eprintln!("building a history of about {} MiB...", args.size_mb);
    let exchanges = build_history(&db_path, args.size_mb).expect("the history is written");
    let size = nu_agent::app::db_size(&db_path);

    // The workers, busy with a backlog of every exchange.
    let counter = WorkerCounter::new();
    let background = BackgroundWorkers::new(&counter);
    let coordinator = WorkCoordinator::new(&counter, &background);
    let setup = Setup {
        db_path: db_path.clone(),
        model: Arc::new(LocalModel::new()),
        current_conversation: Arc::new(AtomicI64::new(0)),
        cancel: Cancel::new(),
        retry: RetryPolicy::default(),
        idle_interval: Duration::from_secs(60),
        events: None,
    };
    workers::register(&background, &setup).expect("the workers register");
    background.start_all().expect("the workers start");
    let busy_since = Instant::now();
    while background
        .status(workers::EXCHANGE_SUMMARIZER)
        .map_or(0, |s| s.completed)
        < 20
    {
        assert!(
            busy_since.elapsed() < Duration::from_secs(60),
            "the workers never got going"
        );
        std::thread::sleep(Duration::from_millis(5));
    }

    eprintln!(
        "backing up {} while the workers run, {RUNS} times...",
        nu_agent::app::human_size(size)
    );
    let mut reports = Vec::new();
    for run in 0..RUNS {
        settle_disk();
        let options = Options {
            dest: dir.path().join(format!("backup-{run}.db")),
            full_check: false,
            timeout: Duration::from_secs(10),
            progress: false,
        };
        let report = backup::run(&db_path, Some(&coordinator), &options).expect("the backup works");
        let _ = std::fs::remove_file(&options.dest);
        reports.push(report);
    }
    let summaries_during = background
        .status(workers::EXCHANGE_SUMMARIZER)
        .map_or(0, |s| s.completed);

    // The plain copy, of the same file once nothing writes to it.
    background
        .stop_all(Duration::from_secs(30))
        .expect("the workers stop");
    {
        let conn = rusqlite::Connection::open(&db_path).expect("reopen");
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .expect("checkpoint");
    }
    let mut copies = Vec::new();
    for run in 0..RUNS {
        settle_disk();
        let plain = dir.path().join(format!("plain-copy-{run}.db"));
        let copy_started = Instant::now();
        std::fs::copy(&db_path, &plain).expect("the plain copy");
        File::open(&plain)
            .and_then(|f| f.sync_all())
            .expect("sync the plain copy");
        copies.push(copy_started.elapsed());
        let _ = std::fs::remove_file(&plain);
    }

    let pause = median(reports.iter().map(|r| r.pause_window).collect());
    let pause_worst = reports
        .iter()
        .map(|r| r.pause_window)
        .max()
        .unwrap_or_default();
    let backup_time = median(reports.iter().map(|r| r.copy).collect());
    let methods: Vec<String> = reports.iter().map(|r| format!("{:?}", r.method)).collect();
    let verify = median(reports.iter().map(|r| r.verify).collect());
    let copy = median(copies);
    let ratio = backup_time.as_secs_f64() / copy.as_secs_f64().max(1e-9);
    let pause_ok = ms(pause_worst) <= 50.0;
    let ratio_ok = ratio <= 3.0;
    let rows: [(&str, f64, &str, Option<bool>); 5] = [
        ("pause_window_ms", ms(pause_worst), "<= 50", Some(pause_ok)),
        ("backup_ms", ms(backup_time), "", None),
        ("verify_ms", ms(verify), "", None),
        ("copy_ms", ms(copy), "", None),
        ("backup_copy_ratio", ratio, "<= 3", Some(ratio_ok)),
    ];
    if args.json {
        for (metric, value, target, pass) in rows {
            let mut line = serde_json::json!({
                "metric": metric,
                "unit": if metric.ends_with("_ms") { "ms" } else { "ratio" },
                "value": (value * 1000.0).round() / 1000.0,
                "size_mb": args.size_mb,
            });
            if let Some(pass) = pass {
                line["target"] = target.into();
                line["pass"] = pass.into();
            }
            if metric == "backup_ms" {
                line["methods"] = methods.clone().into();
            }
            println!("{line}");
        }
    } else {
        println!(
            "history: {} in {} exchanges; the exchange summarizer finished {} items by the \
             end of the backups",
            nu_agent::app::human_size(size),
            exchanges,
            summaries_during
        );
        println!(
            "pause window: worst {:.2} ms, median {:.2} ms of {RUNS} backups; other figures \
             are medians; copied by: {}",
            ms(pause_worst),
            ms(pause),
            methods.join(", ")
        );
        println!("{:<20} {:>12}  {:<8} result", "metric", "value", "target");
        for (metric, value, target, pass) in rows {
            let result = match pass {
                Some(true) => "pass",
                Some(false) => "FAIL",
                None => "",
            };
            println!("{metric:<20} {value:>12.2}  {target:<8} {result}");
        }
    }
}
