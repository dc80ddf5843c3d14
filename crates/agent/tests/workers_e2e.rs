//! End-to-end: the built binary in pipe mode, its background workers
//! summarising and embedding what was said while the test watches the
//! database, and `/workers` and `/search` on the results.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::process::{Child, ChildStdin, Output};
use std::time::Duration;

use common::{text, Sandbox};

const WORKERS: [&str; 3] = [
    "exchange_summarizer",
    "conversation_summarizer",
    "embedding_generator",
];

/// A running agent whose standard input stays open until
/// [`finish`](Agent::finish).
struct Agent {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
}

impl Agent {
    fn start(sandbox: &Sandbox) -> Self {
        let mut child = sandbox.spawn(sandbox.command());
        let stdin = child.stdin.take();
        Self {
            child: Some(child),
            stdin,
        }
    }

    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("standard input is open");
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// Closes standard input and waits for the agent to leave.
    fn finish(mut self) -> Output {
        drop(self.stdin.take());
        let out = self.child.take().unwrap().wait_with_output().unwrap();
        assert!(out.status.success(), "stderr: {}", text(&out.stderr));
        out
    }

    /// Polls the database until `condition` holds; on failure stops the
    /// agent and shows what it said.
    fn wait(mut self, what: &str, condition: impl FnMut() -> bool) -> Self {
        if common::wait_for(condition) {
            return self;
        }
        drop(self.stdin.take());
        let mut child = self.child.take().unwrap();
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        panic!(
            "gave up waiting for {what}\nstdout: {}\nstderr: {}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One worker's line of a `/workers` table.
#[derive(Debug)]
struct Row {
    state: String,
    done: u64,
    failed: u64,
}

/// Every `/workers` table in `stdout`, in order, by worker name.
fn worker_tables(stdout: &str) -> Vec<HashMap<String, Row>> {
    let lines: Vec<&str> = stdout.lines().collect();
    let mut tables = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if !(line.starts_with("worker ") && line.contains("doing / last result")) {
            continue;
        }
        let mut table = HashMap::new();
        for row in &lines[i + 1..] {
            let fields: Vec<&str> = row.split_whitespace().collect();
            if fields.len() < 7 || !WORKERS.contains(&fields[0]) {
                break;
            }
            // worker, state, total, done, failed, backlog, spend, ...
            table.insert(
                fields[0].to_owned(),
                Row {
                    state: fields[1].to_owned(),
                    done: fields[3].parse().unwrap(),
                    failed: fields[4].parse().unwrap(),
                },
            );
        }
        assert_eq!(table.len(), 3, "every worker is listed: {stdout}");
        tables.push(table);
    }
    tables
}

fn states(table: &HashMap<String, Row>) -> Vec<(&str, &str)> {
    WORKERS
        .iter()
        .map(|name| (*name, table[*name].state.as_str()))
        .collect()
}

/// `/search` result lines: `(score, the line)`, best first.
fn search_hits(stdout: &str) -> Vec<(f32, String)> {
    stdout
        .lines()
        .filter_map(|line| {
            let (score, rest) = line.split_once("  exchange ")?;
            Some((score.trim().parse().ok()?, rest.to_owned()))
        })
        .collect()
}

/// Summaries of exchanges that have their embedding.
const EMBEDDED_EXCHANGES: &str = "SELECT count(*) FROM summaries s
     JOIN embeddings e ON e.summary_id = s.id WHERE s.subject = 'exchange'";

#[test]
fn what_is_said_is_summarised_embedded_and_found_by_search() {
    let sandbox = Sandbox::new();
    let mut agent = Agent::start(&sandbox);
    agent.send("How should I schedule database backups for the history file?");
    agent.send("Here is my lemon cake recipe: three lemons, butter and sugar.");
    agent.send("My cat is called Ferdinand and he sleeps all day.");
    let mut agent = agent.wait("three summaries, each embedded", || {
        sandbox.query(EMBEDDED_EXCHANGES) == Some(3)
    });
    agent.send("/workers");
    agent.send("/search database backup");
    let out = agent.finish();
    let stdout = text(&out.stdout);

    let tables = worker_tables(&stdout);
    assert_eq!(tables.len(), 1, "{stdout}");
    let table = &tables[0];
    for name in WORKERS {
        let row = &table[name];
        assert!(
            row.state == "idle" || row.state == "running",
            "{name}: {row:?}"
        );
        assert_eq!(row.failed, 0, "{name}: {row:?}");
    }
    assert_eq!(table["exchange_summarizer"].done, 3, "{stdout}");
    let batches = table["embedding_generator"].done;
    assert!((1..=3).contains(&batches), "{stdout}");
    // The one conversation is the current one: it is not summarised.
    assert_eq!(table["conversation_summarizer"].done, 0, "{stdout}");

    let hits = search_hits(&stdout);
    assert_eq!(hits.len(), 3, "{stdout}");
    assert!(
        hits[0].1.contains("database backups"),
        "the backup exchange comes first: {stdout}"
    );
    assert!(hits[0].0 > hits[1].0, "{stdout}");
    assert!(text(&out.stderr).is_empty(), "{}", text(&out.stderr));
}

#[test]
fn a_pause_lasts_one_run_and_a_disabled_worker_stays_disabled() {
    let sandbox = Sandbox::new();
    let summaries = "SELECT count(*) FROM summaries";

    // First run: everything paused, so nothing is summarised.
    let mut agent = Agent::start(&sandbox);
    agent.send("/workers pause all");
    agent.send("The boiler needs a service in October.");
    let mut agent = agent.wait("the exchange", || {
        sandbox.query("SELECT count(*) FROM exchanges WHERE status = 'completed'") == Some(1)
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        sandbox.query(summaries),
        Some(0),
        "paused workers write nothing"
    );
    agent.send("/workers");
    let out = agent.finish();
    let stdout = text(&out.stdout);
    for name in WORKERS {
        assert!(stdout.contains(&format!("{name}: paused")), "{stdout}");
    }
    let tables = worker_tables(&stdout);
    assert_eq!(
        states(&tables[0]),
        WORKERS.map(|name| (name, "paused")),
        "{stdout}"
    );

    // Second run: the pause is gone; the first run's exchange and its
    // conversation, no longer the current one, are summarised. Then the
    // embedding generator is disabled.
    let mut agent = Agent::start(&sandbox);
    agent.send("/workers");
    let mut agent = agent.wait("the first run's summaries, embedded", || {
        sandbox.query(summaries) == Some(2)
            && sandbox.query("SELECT count(*) FROM embeddings") == Some(2)
    });
    agent.send("/workers disable embedding_generator");
    agent.send("/workers");
    let out = agent.finish();
    let stdout = text(&out.stdout);
    assert!(stdout.contains("embedding_generator: disabled"), "{stdout}");
    let tables = worker_tables(&stdout);
    assert_eq!(tables.len(), 2, "{stdout}");
    for (name, state) in states(&tables[0]) {
        assert!(state == "idle" || state == "running", "{name}: {stdout}");
    }
    assert_eq!(
        tables[1]["embedding_generator"].state, "disabled",
        "{stdout}"
    );

    // Third run: still disabled, so a new summary waits for its
    // embedding until the generator is enabled again.
    let mut agent = Agent::start(&sandbox);
    agent.send("/workers");
    agent.send("Plant the tulip bulbs in autumn.");
    let mut agent = agent.wait("the new exchange's summary", || {
        sandbox.query("SELECT count(*) FROM summaries WHERE subject = 'exchange'") == Some(2)
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        sandbox.query(summaries),
        Some(3),
        "the conversation in progress is not summarised"
    );
    assert_eq!(
        sandbox.query("SELECT count(*) FROM embeddings"),
        Some(2),
        "a disabled generator embeds nothing"
    );
    agent.send("/workers enable embedding_generator");
    let mut agent = agent.wait("the new summary's embedding", || {
        sandbox.query("SELECT count(*) FROM embeddings") == Some(3)
    });
    agent.send("/workers");
    let out = agent.finish();
    let stdout = text(&out.stdout);
    let tables = worker_tables(&stdout);
    assert_eq!(tables.len(), 2, "{stdout}");
    assert_eq!(
        tables[0]["embedding_generator"].state, "disabled",
        "{stdout}"
    );
    assert!(stdout.contains("embedding_generator: enabled"), "{stdout}");
    assert_ne!(
        tables[1]["embedding_generator"].state, "disabled",
        "{stdout}"
    );

    // Fourth run: enabled is remembered too.
    let out = sandbox.pipe("/workers\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for (name, state) in states(&worker_tables(&stdout)[0]) {
        assert!(state == "idle" || state == "running", "{name}: {stdout}");
    }
    assert_eq!(
        sandbox.query(
            "SELECT count(*) FROM config
             WHERE key = 'worker.embedding_generator.enabled' AND value = 'true'"
        ),
        Some(1)
    );
}

#[test]
fn unknown_worker_names_are_refused_with_the_known_ones() {
    let sandbox = Sandbox::new();
    let out = sandbox
        .pipe("/workers pause frobnicator\n/workers disable\n/workers explode all\n/workers\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    let unknown = stderr
        .lines()
        .find(|line| line.contains("unknown worker \"frobnicator\""))
        .unwrap_or_else(|| panic!("{stderr}"));
    for name in WORKERS {
        assert!(unknown.contains(name), "{unknown}");
    }
    assert!(
        stderr.contains("/workers disable needs a worker name or `all`"),
        "{stderr}"
    );
    assert!(stderr.contains("unknown action \"explode\""), "{stderr}");

    // Nothing was changed by the refused commands.
    let stdout = text(&out.stdout);
    for (name, state) in states(&worker_tables(&stdout)[0]) {
        assert!(state == "idle" || state == "running", "{name}: {stdout}");
    }
    assert!(
        !stdout.contains("paused") && !stdout.contains("disabled"),
        "{stdout}"
    );
}
