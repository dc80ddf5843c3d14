//! `/exit`: leave cleanly.

use anyhow::Result;

use super::Flow;
use crate::app::App;

/// Asks the REPL to shut down.
pub fn run(_app: &mut App, _args: &str) -> Result<Flow> {
    Ok(Flow::Exit)
}
