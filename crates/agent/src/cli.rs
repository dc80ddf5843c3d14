//! Command-line options.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// An AI-agent shell whose exchanges and background workers share one
/// SQLite database, and that can bring itself to a safe state for backups
/// and editors.
///
/// With no subcommand, opens the interactive shell, or, when standard
/// input is not a terminal, reads one input per line and answers each in
/// turn.
#[derive(Debug, Parser)]
#[command(name = "nu-agent", version, about, long_about = None)]
pub struct Cli {
    /// The history database [default: $XDG_DATA_HOME/nu-agent/history.db]
    #[arg(long, global = true, env = "NU_AGENT_DB", value_name = "PATH")]
    pub db: Option<PathBuf>,

    /// The model: `local` (built in, offline) or `openai:NAME` (any
    /// OpenAI-compatible server; see OPENAI_BASE_URL and OPENAI_API_KEY)
    #[arg(
        long,
        env = "NU_AGENT_MODEL",
        default_value = "local",
        value_name = "MODEL"
    )]
    pub model: String,

    /// Log what the program and its workers do to standard error (same as
    /// RUST_LOG=debug)
    #[arg(long, global = true)]
    pub debug: bool,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What to do instead of opening the shell.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the live counts of an agent using the database, read from the
    /// database itself (run it from another terminal)
    Status,
    /// Write a verified copy of the database when no agent is using it (in
    /// a running agent, use /backup)
    Backup {
        /// Where the copy goes; it must not exist [default:
        /// ./memory-YYYY-MM-DD-HHMMSS.db]
        dest: Option<String>,
        /// Run SQLite's full integrity check on the copy instead of the
        /// quick one
        #[arg(long)]
        full: bool,
    },
}
