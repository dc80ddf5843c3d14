//! `/status` inside the shell, and `nu-agent status` from outside it.
//!
//! Inside, the figures are live. Outside, they are read from the counts
//! mirror in the database's `metadata` table, which the running agent keeps
//! current; this is why the counts live in the database.

use std::path::Path;

use anyhow::Result;
use nu_coord::{read_counts, OWNER_PID_KEY, UPDATED_AT_KEY};

use super::Flow;
use crate::app::{self, App};
use crate::db;
use crate::owner;

/// Prints the live status.
pub fn run(app: &mut App, _args: &str) -> Result<Flow> {
    let status = app.coordinator.status();
    let workers = app.workers.statuses();
    let paused: Vec<&str> = workers
        .iter()
        .filter(|w| w.paused)
        .map(|w| w.name.as_str())
        .collect();
    let history = db::history_counts(&app.conn)?;

    println!("model:              {}", app.model.name());
    println!(
        "database:           {} ({})",
        app.db_path.display(),
        app::human_size(app.db_size())
    );
    println!(
        "history:            {}, {}, {}, {}",
        app::plural(history.conversations, "conversation", "conversations"),
        app::plural(history.exchanges, "exchange", "exchanges"),
        app::plural(history.summaries, "summary", "summaries"),
        app::plural(history.embeddings, "embedding", "embeddings")
    );
    println!("orchestrators:      {}", status.orchestrators);
    println!("background workers: {}", status.background_workers);
    let pauses = if workers.is_empty() {
        "no workers".to_owned()
    } else if status.paused {
        "all paused".to_owned()
    } else if paused.is_empty() {
        "none paused".to_owned()
    } else {
        format!("paused: {}", paused.join(", "))
    };
    println!("pauses:             {pauses}");
    println!(
        "safe states:        {} held{}",
        status.safe_states,
        if status.admitting {
            ""
        } else {
            " (new exchanges wait)"
        }
    );
    Ok(Flow::Continue)
}

/// `nu-agent status`: reads the counts another agent keeps in `db_path`.
///
/// # Errors
///
/// The database does not exist or can not be read.
pub fn report(db_path: &Path) -> Result<()> {
    if !db_path.exists() {
        anyhow::bail!(
            "there is no database at {} yet: no agent has used it",
            db_path.display()
        );
    }
    let conn = db::open_read_only(db_path)?;
    let counts = read_counts(&conn)?;
    let owner = owner::current_owner(db_path)?;
    let meta = |key: &str| -> Option<i64> {
        conn.query_row(
            "SELECT CAST(value AS INTEGER) FROM metadata WHERE key = ?1",
            [key],
            |row| row.get(0),
        )
        .ok()
    };
    println!(
        "database:           {} ({})",
        db_path.display(),
        app::human_size(app::db_size(db_path))
    );
    match owner {
        Some(pid) => println!("owner:              nu-agent, pid {pid}"),
        None => println!("owner:              none (no agent is using this database)"),
    }
    println!("orchestrators:      {}", counts.orchestrators);
    println!("background workers: {}", counts.background_workers);
    if let Some(at) = meta(UPDATED_AT_KEY) {
        let age = (db::now_ms() - at).max(0) as f64 / 1000.0;
        let writer = meta(OWNER_PID_KEY).map_or_else(String::new, |p| format!(" by pid {p}"));
        println!("counts written:     {age:.1} s ago{writer}");
    }
    if owner.is_none() && counts.total() > 0 {
        println!(
            "note: no agent owns the database, so these counts are left over from a run \
             that stopped without a clean shutdown; the next agent resets them"
        );
    }
    Ok(())
}
