//! The one path by which threads talk to the terminal.
//!
//! Orchestrator threads, background workers and the Ctrl-C handler never
//! print. They send [`Event`]s to the REPL's thread, which alone writes to
//! the terminal, at moments it chooses: never over the prompt, never while
//! an editor has the terminal.

use std::sync::mpsc::{channel, Receiver, Sender};

use crate::exchange::Finished;

/// Something for the REPL's thread to act on.
#[derive(Debug)]
pub enum Event {
    /// A piece of the reply of exchange number `.0` (see
    /// [`ExchangeRequest::number`](crate::exchange::ExchangeRequest::number)).
    Text(u64, String),
    /// Exchange number `.0` has ended.
    Finished(u64, Finished),
    /// The user pressed Ctrl-C while no prompt was reading.
    Interrupt,
    /// A line from a background worker, shown between prompts.
    Note(String),
}

/// The sending side, cloned into every thread that reports.
pub type EventSender = Sender<Event>;

/// Both ends of the event channel.
pub struct Events {
    /// For other threads.
    pub tx: EventSender,
    /// For the REPL's thread.
    pub rx: Receiver<Event>,
}

impl Events {
    /// Creates the channel.
    pub fn new() -> Self {
        let (tx, rx) = channel();
        Self { tx, rx }
    }
}

impl Default for Events {
    fn default() -> Self {
        Self::new()
    }
}
