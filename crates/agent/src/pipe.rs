//! Pipe mode: standard input is not a terminal, so read one input per
//! line and finish each exchange before the next. Replies go to standard
//! output, with no prompt and no progress display.

use std::io::BufRead;

use anyhow::Result;

use crate::app::App;
use crate::commands::{self, Flow};

/// Answers every line of standard input, then returns.
///
/// # Errors
///
/// Standard input could not be read.
pub fn run(app: &mut App) -> Result<()> {
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let line = line?;
        app.flush_notes();
        let input = line.trim();
        if input.is_empty() {
            continue;
        }
        if commands::is_command(input) {
            match commands::dispatch(app, input) {
                Ok(Flow::Exit) => break,
                Ok(Flow::Continue) => {}
                Err(err) => eprintln!("error: {err:#}"),
            }
        } else {
            app.ask(input)?;
        }
    }
    app.flush_notes();
    Ok(())
}
