//! Tasks and helpers shared by the integration tests.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::collections::VecDeque;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nu_coord::{BackgroundTask, Outcome, TaskError, Unit};

/// Long enough that a test never hits it unless something is broken.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Short: used only to show that something does *not* happen.
pub const A_MOMENT: Duration = Duration::from_millis(100);

/// What a scripted item does when run.
pub enum Step {
    /// Succeeds with this summary and cost.
    Ok(&'static str, f64),
    /// Fails with this message.
    Fail(&'static str),
    /// Panics with this message.
    Panic(&'static str),
    /// Tells the test it has started, waits for the test's go-ahead, then
    /// calls `checkpoint`, waits for a second go-ahead, and succeeds.
    Gated,
}

/// A task that runs a script of steps and records what it did.
pub struct Scripted {
    pub queue: Arc<Mutex<VecDeque<Step>>>,
    pub done: Arc<Mutex<Vec<String>>>,
    pub entered: Sender<()>,
    pub go: Arc<Mutex<Receiver<()>>>,
}

pub struct ScriptHandle {
    pub queue: Arc<Mutex<VecDeque<Step>>>,
    pub done: Arc<Mutex<Vec<String>>>,
    pub entered: Receiver<()>,
    pub go: Sender<()>,
}

pub fn scripted(steps: Vec<Step>) -> (Scripted, ScriptHandle) {
    let queue = Arc::new(Mutex::new(steps.into_iter().collect::<VecDeque<_>>()));
    let done = Arc::new(Mutex::new(Vec::new()));
    let (entered_tx, entered_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel();
    (
        Scripted {
            queue: queue.clone(),
            done: done.clone(),
            entered: entered_tx,
            go: Arc::new(Mutex::new(go_rx)),
        },
        ScriptHandle {
            queue,
            done,
            entered: entered_rx,
            go: go_tx,
        },
    )
}

impl ScriptHandle {
    pub fn push(&self, step: Step) {
        self.queue.lock().unwrap().push_back(step);
    }

    pub fn done(&self) -> Vec<String> {
        self.done.lock().unwrap().clone()
    }

    /// Waits until the worker has recorded `n` finished items.
    pub fn wait_done(&self, n: usize) -> bool {
        wait_for(|| self.done.lock().unwrap().len() >= n)
    }
}

impl BackgroundTask for Scripted {
    type Item = (usize, Step);

    fn next_item(&mut self, unit: &Unit<'_>) -> Result<Option<Self::Item>, TaskError> {
        let mut queue = self.queue.lock().unwrap();
        unit.set_backlog(queue.len() as u64);
        let n = self.done.lock().unwrap().len();
        Ok(queue.pop_front().map(|step| (n, step)))
    }

    fn describe(&self, item: &Self::Item) -> String {
        format!("item {}", item.0)
    }

    fn run_item(&mut self, (n, step): Self::Item, unit: &Unit<'_>) -> Result<Outcome, TaskError> {
        let result = match step {
            Step::Ok(summary, cost) => Ok(Outcome::new(summary).with_cost(cost)),
            Step::Fail(message) => Err(message.into()),
            Step::Panic(message) => {
                self.done.lock().unwrap().push(format!("{n}:panic"));
                panic!("{message}");
            }
            Step::Gated => {
                let _ = self.entered.send(());
                let go = self.go.lock().unwrap();
                go.recv_timeout(PATIENCE)
                    .expect("test never let the unit go on");
                let checkpoint = unit.checkpoint();
                go.recv_timeout(PATIENCE)
                    .expect("test never let the unit finish");
                if checkpoint.is_shutdown() {
                    Err("shutdown".into())
                } else {
                    Ok(Outcome::new("gated"))
                }
            }
        };
        let tag = if result.is_ok() { "ok" } else { "err" };
        self.done.lock().unwrap().push(format!("{n}:{tag}"));
        result
    }
}

/// A task with no work at all.
pub struct Nothing;

impl BackgroundTask for Nothing {
    type Item = ();

    fn next_item(&mut self, _: &Unit<'_>) -> Result<Option<()>, TaskError> {
        Ok(None)
    }

    fn describe(&self, _: &()) -> String {
        String::new()
    }

    fn run_item(&mut self, _: (), _: &Unit<'_>) -> Result<Outcome, TaskError> {
        Ok(Outcome::default())
    }
}

/// Polls `condition` until it holds or `PATIENCE` passes. Only for
/// observing results from a test; the library itself never polls.
pub fn wait_for(mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    condition()
}
