//! End-to-end through a pseudo-terminal: the interactive shell, and Ctrl-C
//! cancelling one exchange.

mod common;

use common::{field, Sandbox};

#[test]
fn ctrl_c_cancels_the_running_exchange_only() {
    let sandbox = Sandbox::new();
    let mut cmd = sandbox.command();
    cmd.env("NU_AGENT_LOCAL_LATENCY_MS", "30000")
        .env("TERM", "xterm");
    let mut shell = rexpect::session::spawn_command(cmd, Some(20_000)).unwrap();
    shell.exp_string("nu> ").unwrap();
    shell.send_line("tell me a very long story").unwrap();
    // Wait until the exchange is really running.
    assert!(common::wait_for(|| field(
        &sandbox.status(),
        "orchestrators"
    )
    .as_deref()
        == Some("1")));
    shell.send_control('c').unwrap();
    shell.exp_string("exchange cancelled").unwrap();
    shell.exp_string("nu> ").unwrap();

    // Ctrl-C at the prompt says how to leave.
    shell.send_control('c').unwrap();
    shell.exp_string("Ctrl-D").unwrap();
    shell.send_line("/status").unwrap();
    shell.exp_string("orchestrators:      0").unwrap();
    shell.send_line("/exit").unwrap();
    shell.exp_eof().unwrap();

    assert_eq!(
        sandbox.exchanges(),
        [(
            "cancelled".to_owned(),
            "tell me a very long story".to_owned()
        )]
    );
    assert_eq!(
        field(&sandbox.status(), "orchestrators").as_deref(),
        Some("0")
    );
}

#[test]
fn the_shell_completes_commands_and_keeps_input_history() {
    let sandbox = Sandbox::new();
    let mut cmd = sandbox.command();
    cmd.env("TERM", "xterm");
    let mut shell = rexpect::session::spawn_command(cmd, Some(20_000)).unwrap();
    shell.exp_string("nu> ").unwrap();
    shell.send("/sta\t").unwrap();
    shell.send_line("").unwrap();
    shell.exp_string("orchestrators:").unwrap();
    shell.exp_string("nu> ").unwrap();
    shell.send_line("first line \\").unwrap();
    shell.send_line("second line").unwrap();
    shell.exp_string("nu> ").unwrap();
    shell.send_control('d').unwrap();
    shell.exp_eof().unwrap();

    let exchanges = sandbox.exchanges();
    assert_eq!(exchanges.len(), 1);
    assert_eq!(exchanges[0].1, "first line \nsecond line");
    let history =
        std::fs::read_to_string(sandbox.dir.path().join("data/nu-agent/input_history")).unwrap();
    assert!(history.contains("/status"), "{history}");
}
