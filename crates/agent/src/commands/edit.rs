//! `/edit [TEXT]`: write the next input in an external editor.
//!
//! The editor is `$VISUAL`, else `$EDITOR`, else `vi`, run through the shell
//! so the variable may carry arguments (`code --wait`), the way git does.
//! While it has the terminal, the background workers are paused through a
//! safe state and nothing else is printed; afterwards everything is as it
//! was (a worker the user had paused stays paused).

use std::io::Write;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::Flow;
use crate::app::App;

/// How long `/edit` waits for a safe state.
const SAFE_STATE_TIMEOUT: Duration = Duration::from_secs(10);

/// The editor command the user chose.
fn editor() -> String {
    ["VISUAL", "EDITOR"]
        .into_iter()
        .filter_map(|var| std::env::var(var).ok())
        .find(|value| !value.trim().is_empty())
        .unwrap_or_else(|| "vi".to_owned())
}

/// Opens the editor on a temporary file pre-filled with `args`, and sends
/// what was saved as the next input.
pub fn run(app: &mut App, args: &str) -> Result<Flow> {
    let mut file = tempfile::Builder::new()
        .prefix("nu-agent-input-")
        .suffix(".md")
        .tempfile()
        .context("could not create a file for the editor")?;
    if !args.is_empty() {
        writeln!(file, "{args}").context("could not write the file for the editor")?;
    }
    let path = file.path().to_owned();
    let editor = editor();

    let status = {
        let _safe = app
            .coordinator
            .prepare_for_external_editor(SAFE_STATE_TIMEOUT)
            .context("the editor was not opened")?;
        Command::new("sh")
            .arg("-c")
            .arg(format!("{editor} \"$@\""))
            .arg("nu-agent-editor")
            .arg(&path)
            .status()
            .with_context(|| format!("could not run the editor {editor:?}"))?
        // The safe state ends here, restoring the workers as they were.
    };
    match status.code() {
        Some(0) => {}
        // The shell's code for a command it could not find or run.
        Some(127) | Some(126) => {
            bail!("could not run the editor {editor:?}: no such program; set VISUAL or EDITOR")
        }
        Some(code) => {
            println!("edit cancelled: the editor exited with status {code}");
            return Ok(Flow::Continue);
        }
        None => {
            println!("edit cancelled: the editor was stopped by a signal");
            return Ok(Flow::Continue);
        }
    }
    let text = std::fs::read_to_string(&path).context("could not read what the editor saved")?;
    let input = text.trim();
    if input.is_empty() {
        println!("edit cancelled: the file was left empty");
        return Ok(Flow::Continue);
    }
    app.ask(input)?;
    Ok(Flow::Continue)
}
