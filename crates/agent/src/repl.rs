//! The interactive shell: a line editor with persistent input history,
//! slash-command completion and multi-line input.

use std::borrow::Cow;
use std::path::PathBuf;

use anyhow::Result;
use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::FileHistory;
use rustyline::validate::{ValidationContext, ValidationResult, Validator};
use rustyline::{Config, Context, Editor, Helper};

use crate::app::App;
use crate::commands::{self, Flow, COMMANDS};

const PROMPT: &str = "nu> ";

/// Where the input history is kept: next to the default database.
fn history_path() -> Option<PathBuf> {
    dirs::data_dir().map(|dir| dir.join("nu-agent").join("input_history"))
}

/// Runs the shell until `/exit` or Ctrl-D.
///
/// # Errors
///
/// The terminal could not be read.
pub fn run(app: &mut App) -> Result<()> {
    let config = Config::builder()
        .auto_add_history(false)
        .history_ignore_dups(true)?
        .max_history_size(10_000)?
        .build();
    let mut editor: Editor<ShellHelper, FileHistory> = Editor::with_config(config)?;
    editor.set_helper(Some(ShellHelper));
    // After the editor, whose own SIGINT handler this replaces: in the
    // editor's raw mode Ctrl-C is a key, not a signal, so it loses nothing.
    crate::install_interrupt_handler(app);
    let history = history_path();
    if let Some(path) = &history {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = editor.load_history(path);
    }

    println!(
        "nu-agent {} · model {} · history {}",
        env!("CARGO_PKG_VERSION"),
        app.model.name(),
        app.db_path.display()
    );
    println!("Type a message, /help for commands, Ctrl-D to leave.");

    loop {
        app.flush_notes();
        match editor.readline(PROMPT) {
            Ok(line) => {
                let input = join_continuations(&line);
                if input.trim().is_empty() {
                    continue;
                }
                let _ = editor.add_history_entry(line.as_str());
                if commands::is_command(&input) {
                    match commands::dispatch(app, &input) {
                        Ok(Flow::Exit) => break,
                        Ok(Flow::Continue) => {}
                        Err(err) => eprintln!("error: {err:#}"),
                    }
                } else {
                    app.ask(input.trim())?;
                }
            }
            Err(ReadlineError::Interrupted) => {
                println!(
                    "(Ctrl-C cancels a running exchange; to leave, press Ctrl-D or type /exit)"
                );
            }
            Err(ReadlineError::Eof) => break,
            Err(err) => return Err(err.into()),
        }
    }
    if let Some(path) = &history {
        let _ = editor.save_history(path);
    }
    Ok(())
}

/// Turns the editor's multi-line text (lines ending in `\`) into one input.
fn join_continuations(line: &str) -> String {
    line.replace("\\\n", "\n")
}

/// Completion of slash commands and multi-line input for the editor.
struct ShellHelper;

impl Completer for ShellHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = &line[..pos];
        if !before.starts_with('/') || before.contains(char::is_whitespace) {
            return Ok((pos, Vec::new()));
        }
        let typed = &before[1..];
        let candidates = COMMANDS
            .iter()
            .filter(|c| c.name.starts_with(typed))
            .map(|c| Pair {
                display: format!("/{}", c.name),
                replacement: format!("/{} ", c.name),
            })
            .collect();
        Ok((0, candidates))
    }
}

impl Hinter for ShellHelper {
    type Hint = String;
}

impl Highlighter for ShellHelper {
    fn highlight_prompt<'b, 's: 'b, 'p: 'b>(
        &'s self,
        prompt: &'p str,
        _default: bool,
    ) -> Cow<'b, str> {
        Cow::Borrowed(prompt)
    }
}

impl Validator for ShellHelper {
    fn validate(&self, ctx: &mut ValidationContext<'_>) -> rustyline::Result<ValidationResult> {
        if ctx.input().ends_with('\\') {
            Ok(ValidationResult::Incomplete)
        } else {
            Ok(ValidationResult::Valid(None))
        }
    }
}

impl Helper for ShellHelper {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuation_lines_join_into_one_input() {
        assert_eq!(join_continuations("first\\\nsecond"), "first\nsecond");
        assert_eq!(join_continuations("plain"), "plain");
    }
}
