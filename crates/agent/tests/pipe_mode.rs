//! End-to-end: the built binary in pipe mode with the local model.

mod common;

use common::{text, Sandbox};

#[test]
fn a_conversation_is_answered_and_recorded() {
    let sandbox = Sandbox::new();
    let out = sandbox.pipe("hello\nMy cat is called Ferdinand.\n\nWhat is my cat called?\n");
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "one reply per input: {stdout}");
    assert!(lines[0].contains("offline model"), "{stdout}");
    assert!(lines[2].contains("Ferdinand"), "{stdout}");
    assert!(!stdout.contains("nu>"), "no prompt in pipe mode");

    assert_eq!(
        sandbox.exchanges(),
        [
            ("completed".to_owned(), "hello".to_owned()),
            (
                "completed".to_owned(),
                "My cat is called Ferdinand.".to_owned()
            ),
            ("completed".to_owned(), "What is my cat called?".to_owned()),
        ]
    );
    let conn = sandbox.conn();
    let (messages, open, timed): (i64, i64, i64) = conn
        .query_row(
            "SELECT (SELECT count(*) FROM messages),
                    (SELECT count(*) FROM exchanges WHERE ended_at IS NULL OR reply IS NULL),
                    (SELECT count(*) FROM exchanges WHERE ended_at >= started_at)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!((messages, open, timed), (6, 0, 3));

    // A clean shutdown leaves the counts mirror at zero.
    let status = sandbox.status();
    assert_eq!(
        common::field(&status, "orchestrators").as_deref(),
        Some("0")
    );
    assert!(status.contains("owner:              none"), "{status}");
}

#[test]
fn commands_work_in_pipe_mode_and_unknown_ones_get_a_suggestion() {
    let sandbox = Sandbox::new();
    let out = sandbox.pipe("/help\n/stauts\n/status\n");
    assert!(out.status.success());
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("/backup") || stdout.contains("/status"),
        "{stdout}"
    );
    assert!(stdout.contains("orchestrators:      0"), "{stdout}");
    assert!(
        text(&out.stderr).contains("did you mean /status?"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn exit_stops_reading_input() {
    let sandbox = Sandbox::new();
    let out = sandbox.pipe("first\n/exit\nsecond\n");
    assert!(out.status.success());
    assert_eq!(sandbox.exchanges().len(), 1);
}

#[test]
fn an_unknown_model_is_a_clear_error() {
    let sandbox = Sandbox::new();
    let mut cmd = sandbox.command();
    cmd.args(["--model", "gpt4"]);
    let out = sandbox.pipe_with(cmd, "hi\n");
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("unknown model \"gpt4\""), "{stderr}");
    assert!(
        !sandbox.db().exists(),
        "nothing is created for a bad command line"
    );
}

#[test]
fn version_and_help() {
    let sandbox = Sandbox::new();
    let out = sandbox.command().arg("--version").output().unwrap();
    assert!(text(&out.stdout).starts_with("nu-agent "));
    let out = sandbox.command().arg("--help").output().unwrap();
    let help = text(&out.stdout);
    assert!(
        help.contains("--model") && help.contains("NU_AGENT_DB"),
        "{help}"
    );
}
