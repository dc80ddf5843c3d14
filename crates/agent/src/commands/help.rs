//! `/help`: the commands and how input works.

use anyhow::Result;

use super::{Flow, COMMANDS};
use crate::app::App;

/// Lists the commands.
pub fn run(app: &mut App, _args: &str) -> Result<Flow> {
    println!(
        "Type a message to talk to the model ({}).",
        app.model.name()
    );
    println!("Commands:");
    for spec in COMMANDS {
        let usage = if spec.args.is_empty() {
            format!("/{}", spec.name)
        } else {
            format!("/{} {}", spec.name, spec.args)
        };
        if usage.len() <= 20 {
            println!("  {usage:<20} {}", spec.summary);
        } else {
            println!("  {usage}\n  {:<20} {}", "", spec.summary);
        }
    }
    if app.interactive {
        println!("End a line with \\ to continue on the next line.");
        println!("Ctrl-C cancels a running exchange; Ctrl-D or /exit leaves.");
    }
    Ok(Flow::Continue)
}
