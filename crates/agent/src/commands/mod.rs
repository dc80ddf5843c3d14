//! Slash commands, one file each, and how a line finds its command.

mod backup;
mod edit;
mod exit;
mod help;
mod search;
pub use backup::run_offline as backup_offline;
pub mod status;
mod workers;

use anyhow::Result;

use crate::app::App;

/// What the REPL does after a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Read the next input.
    Continue,
    /// Shut down and leave.
    Exit,
}

/// A command's name, arguments and one-line summary, for `/help` and
/// completion.
pub struct Spec {
    /// The name, without the slash.
    pub name: &'static str,
    /// What follows the name, for `/help`.
    pub args: &'static str,
    /// What it does.
    pub summary: &'static str,
    /// Runs it with the text after the name.
    pub run: fn(&mut App, &str) -> Result<Flow>,
}

/// Every command, in the order `/help` lists them.
pub const COMMANDS: &[Spec] = &[
    Spec {
        name: "help",
        args: "",
        summary: "list the commands",
        run: help::run,
    },
    Spec {
        name: "status",
        args: "",
        summary: "exchanges and workers running, pauses, safe states, database, model",
        run: status::run,
    },
    Spec {
        name: "workers",
        args: "[pause|resume|enable|disable NAME|all]",
        summary: "list the background workers, or pause, resume, enable or disable them",
        run: workers::run,
    },
    Spec {
        name: "search",
        args: "QUERY",
        summary: "find earlier exchanges like QUERY, by their summaries' embeddings",
        run: search::run,
    },
    Spec {
        name: "backup",
        args: "[DEST] [--full]",
        summary: "write a verified copy of the history (default ./memory-DATE-TIME.db)",
        run: backup::run,
    },
    Spec {
        name: "edit",
        args: "[TEXT]",
        summary: "write the next input in $VISUAL or $EDITOR, workers paused meanwhile",
        run: edit::run,
    },
    Spec {
        name: "exit",
        args: "",
        summary: "shut down cleanly and leave (Ctrl-D does the same)",
        run: exit::run,
    },
];

/// Returns `true` if `line` is a slash command.
pub fn is_command(line: &str) -> bool {
    line.trim_start().starts_with('/')
}

/// Runs the slash command on `line`.
///
/// # Errors
///
/// An unknown command (with a suggestion) or the command's own error.
pub fn dispatch(app: &mut App, line: &str) -> Result<Flow> {
    let line = line.trim();
    let body = line.trim_start_matches('/');
    let (name, args) = body.split_once(char::is_whitespace).unwrap_or((body, ""));
    match COMMANDS.iter().find(|c| c.name == name) {
        Some(spec) => (spec.run)(app, args.trim()),
        None => anyhow::bail!("{}", unknown(name)),
    }
}

/// The message for an unknown command, with the closest known one.
fn unknown(name: &str) -> String {
    let closest = COMMANDS
        .iter()
        .map(|c| (strsim::damerau_levenshtein(name, c.name), c.name))
        .filter(|(distance, _)| *distance <= 2)
        .min();
    match closest {
        Some((_, known)) => {
            format!("unknown command /{name}; did you mean /{known}? (/help lists the commands)")
        }
        None => format!("unknown command /{name}; /help lists the commands"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_commands_get_a_suggestion() {
        assert_eq!(
            unknown("stauts"),
            "unknown command /stauts; did you mean /status? (/help lists the commands)"
        );
        assert_eq!(
            unknown("frobnicate"),
            "unknown command /frobnicate; /help lists the commands"
        );
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<_> = COMMANDS.iter().map(|c| c.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), COMMANDS.len());
    }
}
