//! `/workers`: list the background workers, or pause, resume, enable or
//! disable one or all of them.
//!
//! A pause given here is the worker's own pause switch: a backup or an
//! editor that takes and releases a safe state meanwhile does not lift it.
//! Enabled or disabled is remembered in the database across restarts.

use anyhow::{bail, Result};
use nu_coord::WorkerStatus;

use super::Flow;
use crate::app::{App, SHUTDOWN_WAIT};
use crate::db;
use crate::workers;

const USAGE: &str = "usage: /workers [pause|resume|enable|disable NAME|all]";

/// Lists the workers, or changes one or all.
pub fn run(app: &mut App, args: &str) -> Result<Flow> {
    let mut words = args.split_whitespace();
    let (Some(action), target) = (words.next(), words.next()) else {
        list(app);
        return Ok(Flow::Continue);
    };
    if words.next().is_some() {
        bail!("{USAGE}");
    }
    if !["pause", "resume", "enable", "disable"].contains(&action) {
        bail!("unknown action {action:?}; {USAGE}");
    }
    let Some(target) = target else {
        bail!("/workers {action} needs a worker name or `all`; {USAGE}");
    };
    let names: Vec<String> = if target == "all" {
        workers::NAMES.iter().map(|n| (*n).to_owned()).collect()
    } else {
        // Checks the name, with the known ones in the error.
        app.workers.get(target)?;
        vec![target.to_owned()]
    };
    // Each worker on its own: one that fails does not keep the others from
    // being changed; the failures are reported together at the end.
    let mut failures = Vec::new();
    for name in &names {
        match change(app, action, name) {
            Ok(true) => println!("{name}: {}", past(action)),
            Ok(false) => println!("{name}: already {}", past(action)),
            Err(err) => failures.push(format!("{name}: {err:#}")),
        }
    }
    if !failures.is_empty() {
        bail!("{}", failures.join("; "));
    }
    Ok(Flow::Continue)
}

fn past(action: &str) -> &'static str {
    match action {
        "pause" => "paused",
        "resume" => "resumed",
        "enable" => "enabled",
        _ => "disabled",
    }
}

/// Applies `action` to one worker; returns whether it changed anything.
fn change(app: &App, action: &str, name: &str) -> Result<bool> {
    Ok(match action {
        "pause" => app.workers.pause(name)?,
        "resume" => app.workers.resume(name)?,
        "enable" => {
            db::config_set(&app.conn, &workers::enabled_key(name), "true")?;
            let changed = app.workers.enable(name)?;
            app.workers.start(name)?;
            changed
        }
        _ => {
            db::config_set(&app.conn, &workers::enabled_key(name), "false")?;
            app.workers.disable(name, SHUTDOWN_WAIT)?
        }
    })
}

fn list(app: &App) {
    let mut statuses = app.workers.statuses();
    // In the order the workers' work flows, whatever order they were
    // registered in.
    statuses.sort_by_key(|s| {
        workers::NAMES
            .iter()
            .position(|n| *n == s.name)
            .unwrap_or(usize::MAX)
    });
    println!(
        "{:<24} {:<9} {:>6} {:>6} {:>6} {:>7} {:>9}  doing / last result",
        "worker", "state", "total", "done", "failed", "backlog", "spend"
    );
    for s in &statuses {
        println!(
            "{:<24} {:<9} {:>6} {:>6} {:>6} {:>7} {:>9}  {}",
            s.name,
            s.state.as_str(),
            s.total,
            s.completed,
            s.failed,
            s.backlog.map_or_else(
                || "-".to_owned(),
                |b| if b >= workers::BACKLOG_CAP {
                    format!("{b}+")
                } else {
                    b.to_string()
                }
            ),
            format!("${:.4}", s.spend),
            doing(s)
        );
    }
    let held = app.coordinator.status().safe_states;
    if held > 0 {
        println!("({held} safe state(s) held: every worker is paused until they end)");
    }
}

fn doing(status: &WorkerStatus) -> String {
    match (&status.current, &status.last_result) {
        (Some(current), _) => format!("working on {current}"),
        (None, Some(last)) => last.clone(),
        (None, None) => String::new(),
    }
}
