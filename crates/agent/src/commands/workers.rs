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
    let Some(target) = target else {
        bail!("/workers {action} needs a worker name or `all`; {USAGE}");
    };
    let names: Vec<String> = if target == "all" {
        app.workers.names()
    } else {
        // Checks the name, with the known ones in the error.
        app.workers.get(target)?;
        vec![target.to_owned()]
    };
    for name in &names {
        let changed = match action {
            "pause" => app.workers.pause(name)?,
            "resume" => app.workers.resume(name)?,
            "enable" => {
                db::config_set(&app.conn, &workers::enabled_key(name), "true")?;
                let changed = app.workers.enable(name)?;
                app.workers.start(name)?;
                changed
            }
            "disable" => {
                db::config_set(&app.conn, &workers::enabled_key(name), "false")?;
                app.workers.disable(name, SHUTDOWN_WAIT)?
            }
            other => bail!("unknown action {other:?}; {USAGE}"),
        };
        let past = match action {
            "pause" => "paused",
            "resume" => "resumed",
            "enable" => "enabled",
            _ => "disabled",
        };
        if changed {
            println!("{name}: {past}");
        } else {
            println!("{name}: already {past}");
        }
    }
    Ok(Flow::Continue)
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
        "{:<24} {:<9} {:>6} {:>6} {:>7} {:>9}  doing / last result",
        "worker", "state", "done", "failed", "backlog", "spend"
    );
    for s in &statuses {
        println!(
            "{:<24} {:<9} {:>6} {:>6} {:>7} {:>9}  {}",
            s.name,
            s.state.as_str(),
            s.completed,
            s.failed,
            s.backlog.map_or_else(|| "-".to_owned(), |b| b.to_string()),
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
