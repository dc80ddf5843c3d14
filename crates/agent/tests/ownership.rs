//! End-to-end: one owner per database, takeover after a crash, counts seen
//! from another process, and files that are refused untouched.

mod common;

use std::io::Write;

use common::{field, file_bytes, text, wait_for, Sandbox};

/// An agent whose every reply takes a while, with standard input kept
/// open, in the middle of an exchange.
fn agent_in_a_slow_exchange(sandbox: &Sandbox) -> std::process::Child {
    let mut cmd = sandbox.command();
    cmd.env("NU_AGENT_LOCAL_LATENCY_MS", "60000");
    let mut child = sandbox.spawn(cmd);
    writeln!(child.stdin.as_mut().unwrap(), "tell me something slowly").unwrap();
    assert!(
        wait_for(|| field(&sandbox.status(), "orchestrators").as_deref() == Some("1")),
        "the running exchange never showed in `nu-agent status`"
    );
    child
}

#[test]
fn status_from_another_process_sees_a_running_exchange() {
    let sandbox = Sandbox::new();
    let mut agent = agent_in_a_slow_exchange(&sandbox);
    let status = sandbox.status();
    assert!(
        status.contains(&format!("pid {}", agent.id())),
        "the owner is named: {status}"
    );
    agent.kill().unwrap();
    agent.wait().unwrap();
}

#[test]
fn a_second_agent_is_refused_with_the_owners_pid() {
    let sandbox = Sandbox::new();
    let mut first = sandbox.spawn(sandbox.command());
    assert!(wait_for(
        || field(&sandbox.status(), "owner").is_some_and(|o| o.contains(&first.id().to_string()))
    ));

    let out = sandbox.pipe("hello\n");
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains(&format!("pid {}", first.id())), "{stderr}");
    assert!(stderr.contains("only one agent"), "{stderr}");

    drop(first.stdin.take());
    assert!(first.wait().unwrap().success());
    assert!(sandbox.pipe("hello\n").status.success(), "free again");
}

#[test]
fn after_kill_9_the_next_start_takes_over_and_resets_the_counts() {
    let sandbox = Sandbox::new();
    let mut agent = agent_in_a_slow_exchange(&sandbox);
    agent.kill().unwrap(); // SIGKILL: no clean-up runs
    agent.wait().unwrap();

    // The dead run's counts are still in the file, and flagged as stale.
    let status = sandbox.status();
    assert_eq!(field(&status, "orchestrators").as_deref(), Some("1"));
    assert!(status.contains("owner:              none"), "{status}");
    assert!(status.contains("left over"), "{status}");

    let out = sandbox.pipe("hello again\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let status = sandbox.status();
    assert_eq!(field(&status, "orchestrators").as_deref(), Some("0"));
    assert_eq!(
        sandbox.exchanges(),
        [
            ("failed".to_owned(), "tell me something slowly".to_owned()),
            ("completed".to_owned(), "hello again".to_owned()),
        ],
        "the interrupted exchange is marked failed"
    );
}

#[test]
fn a_file_that_is_not_a_database_is_refused_and_left_unchanged() {
    let sandbox = Sandbox::new();
    let garbage: Vec<u8> = (0..50_000u32).map(|i| (i * 7919 % 251) as u8).collect();
    std::fs::write(sandbox.db(), &garbage).unwrap();
    let out = sandbox.pipe("hello\n");
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("is not a SQLite database"), "{stderr}");
    assert!(stderr.contains("left untouched"), "{stderr}");
    assert_eq!(file_bytes(&sandbox.db()), garbage);
    let dir: Vec<_> = std::fs::read_dir(sandbox.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(dir, ["history.db"], "nothing was created next to it");
}

#[test]
fn a_damaged_database_is_refused_and_left_unchanged() {
    let sandbox = Sandbox::new();
    {
        let conn = rusqlite::Connection::open(sandbox.db()).unwrap();
        conn.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
            .unwrap();
    }
    let mut bytes = file_bytes(&sandbox.db());
    // Keep the header, ruin the schema page.
    let end = bytes.len().min(4096);
    for b in &mut bytes[100..end] {
        *b = 0xA5;
    }
    std::fs::write(sandbox.db(), &bytes).unwrap();
    let out = sandbox.pipe("hello\n");
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("left untouched"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(file_bytes(&sandbox.db()), bytes);
}

#[test]
fn a_database_with_a_newer_schema_is_refused_and_left_unchanged() {
    let sandbox = Sandbox::new();
    {
        let conn = rusqlite::Connection::open(sandbox.db()).unwrap();
        conn.execute_batch("CREATE TABLE future(x); PRAGMA user_version = 99;")
            .unwrap();
    }
    let before = file_bytes(&sandbox.db());
    let out = sandbox.pipe("hello\n");
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("schema version 99"), "{stderr}");
    assert_eq!(file_bytes(&sandbox.db()), before);
}

#[test]
fn a_new_database_is_created_with_its_directory() {
    let sandbox = Sandbox::new();
    let nested = sandbox.dir.path().join("a/b/c/history.db");
    let mut cmd = sandbox.bare_command();
    cmd.arg("--db").arg(&nested);
    let out = sandbox.pipe_with(cmd, "hello\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(nested.exists());
}

#[test]
fn the_default_database_lives_in_the_xdg_data_directory() {
    let sandbox = Sandbox::new();
    let mut cmd = sandbox.bare_command();
    cmd.env("XDG_DATA_HOME", sandbox.dir.path().join("xdg"));
    let out = sandbox.pipe_with(cmd, "hello\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(sandbox.dir.path().join("xdg/nu-agent/history.db").exists());
}
