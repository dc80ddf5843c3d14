//! `/backup [DEST] [--full]`: a verified copy of the history, taken while
//! the program keeps working; and `nu-agent backup DEST` for scripts when
//! no agent owns the database.

use std::io::IsTerminal;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Result};

use super::Flow;
use crate::app::{self, App};
use crate::backup::{self, CopyMethod, Options, Report};
use crate::owner;

/// How long a backup waits for a safe state.
pub const SAFE_STATE_TIMEOUT: Duration = Duration::from_secs(10);

/// Splits the arguments as a shell would, so a path with spaces can be
/// quoted: `/backup "my backups/today.db"`.
fn parse(args: &str) -> Result<(Option<String>, bool)> {
    let words = shell_words::split(args)
        .map_err(|e| anyhow::anyhow!("could not read the arguments ({e}); close the quotes"))?;
    let mut dest = None;
    let mut full = false;
    for word in words {
        match word.as_str() {
            "--full" => full = true,
            flag if flag.starts_with("--") => {
                bail!("unknown option {flag}; usage: /backup [DEST] [--full]")
            }
            _ if dest.is_none() => dest = Some(word),
            _ => bail!("one destination only; usage: /backup [DEST] [--full]"),
        }
    }
    Ok((dest, full))
}

/// Backs up the database this agent owns.
pub fn run(app: &mut App, args: &str) -> Result<Flow> {
    let (dest, full_check) = parse(args)?;
    let options = Options {
        dest: backup::resolve_dest(dest.as_deref()),
        full_check,
        timeout: SAFE_STATE_TIMEOUT,
        progress: app.interactive && std::io::stderr().is_terminal(),
    };
    let report = backup::run(&app.db_path, Some(&app.coordinator), &options)?;
    print_report(&report, true);
    Ok(Flow::Continue)
}

/// `nu-agent backup DEST`: refuses when an agent owns the database, since
/// only that agent can bring its work to a safe state.
///
/// # Errors
///
/// The database is owned or missing, or the backup failed.
pub fn run_offline(db_path: &Path, dest: &str, full_check: bool) -> Result<()> {
    if !db_path.exists() {
        bail!("there is no database at {} to back up", db_path.display());
    }
    crate::db::check(db_path)?;
    if let Some(pid) = owner::current_owner(db_path)? {
        bail!(
            "{} is in use by nu-agent (pid {pid}); run /backup in that agent, which can pause \
             its own work safely",
            db_path.display()
        );
    }
    // Hold ownership for the copy, so no agent starts half-way into it.
    let _owner = owner::Owner::acquire(db_path)?;
    let options = Options {
        dest: backup::resolve_dest(Some(dest)),
        full_check,
        timeout: SAFE_STATE_TIMEOUT,
        progress: std::io::stderr().is_terminal(),
    };
    let report = backup::run(db_path, None, &options)?;
    print_report(&report, false);
    Ok(())
}

fn print_report(report: &Report, paused_workers: bool) {
    let pause = report.pause_window.as_secs_f64() * 1000.0;
    let held = if paused_workers {
        format!("workers were paused for {pause:.2} ms")
    } else {
        format!("the snapshot was pinned in {pause:.2} ms")
    };
    println!(
        "backed up to {} ({}) in {:.2} s; {held}",
        report.path.display(),
        app::human_size(report.size),
        report.total.as_secs_f64(),
    );
    let how = match report.method {
        CopyMethod::File => "file copy",
        CopyMethod::Pages => "page copy",
    };
    println!(
        "checked: {} tables, {} rows; {how} {:.2} s, check {:.2} s",
        report.tables,
        report.rows,
        report.copy.as_secs_f64(),
        report.verify.as_secs_f64()
    );
}
