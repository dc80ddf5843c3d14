//! nu-agent: an AI-agent shell whose exchanges and background workers share
//! one SQLite database, built on the `nu-coord` coordination library.
//!
//! The binary's `main` calls [`main`]; everything else is here so that
//! tests can reach it.

pub mod app;
pub mod backup;
pub mod cli;
pub mod commands;
pub mod db;
pub mod events;
pub mod exchange;
mod logging;
pub mod model;
pub mod owner;
mod pipe;
mod repl;
pub mod workers;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Result;
use clap::Parser;

use crate::app::App;
use crate::cli::{Cli, Command};
use crate::events::Event;

/// Runs the program with the process's arguments; returns its exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.debug);
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("nu-agent: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let db_path = db::resolve_path(cli.db.as_deref())?;
    match cli.command {
        Some(Command::Status) => {
            commands::status::report(&db_path)?;
            return Ok(ExitCode::SUCCESS);
        }
        Some(Command::Backup { dest, full }) => {
            commands::backup_offline(&db_path, dest.as_deref().unwrap_or(""), full)?;
            return Ok(ExitCode::SUCCESS);
        }
        None => {}
    }

    let interactive = std::io::stdin().is_terminal();
    let mut app = App::open(&db_path, &cli.model, interactive)?;
    route_thread_panics(&app);
    let result = if interactive {
        repl::run(&mut app)
    } else {
        install_interrupt_handler(&app);
        pipe::run(&mut app)
    };
    let shutdown = app.shutdown();
    result?;
    shutdown?;
    Ok(ExitCode::SUCCESS)
}

/// A panic on a background thread (a worker's unit, an exchange) is
/// caught and recorded where it happened; its message must not land on the
/// terminal over the prompt. So such panics become a note for the REPL to
/// show between prompts, with the location in the log; a panic on the
/// REPL's own thread is reported as usual.
fn route_thread_panics(app: &App) {
    let notes = std::sync::Mutex::new(app.events.tx.clone());
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("a background thread");
        if name == "main" {
            default(info);
            return;
        }
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic with no message".to_owned());
        let location = info
            .location()
            .map_or_else(String::new, |l| format!(" at {}:{}", l.file(), l.line()));
        tracing::debug!("{name} panicked{location}: {message}");
        if let Ok(tx) = notes.lock() {
            let _ = tx.send(Event::Note(format!(
                "{name} panicked: {message} (--debug shows where)"
            )));
        }
    }));
}

/// Ctrl-C outside the line editor (while an exchange runs, or in pipe
/// mode) becomes an [`Event::Interrupt`] for the REPL's thread, which
/// cancels the exchange. A second press within two seconds while the first
/// is still unanswered (the program is stuck, or blocked reading a pipe)
/// ends the process at once.
///
/// The line editor installs a SIGINT handler of its own when it is
/// created, so the REPL calls this after creating it.
pub(crate) fn install_interrupt_handler(app: &App) {
    let tx = app.events.tx.clone();
    let pending = app.interrupt_pending.clone();
    let last = AtomicU64::new(0);
    let result = ctrlc::set_handler(move || {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let previous = last.swap(now, Ordering::SeqCst);
        let unanswered = pending.swap(true, Ordering::SeqCst);
        if unanswered && now.saturating_sub(previous) < 2_000 {
            eprintln!("\nnu-agent: interrupted twice; leaving now");
            std::process::exit(130);
        }
        let _ = tx.send(Event::Interrupt);
    });
    if let Err(err) = result {
        tracing::warn!("Ctrl-C will not cancel exchanges: {err}");
    }
}
