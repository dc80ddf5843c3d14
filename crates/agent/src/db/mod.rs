//! The history database: where it lives, how it is opened and checked,
//! its schema, and the queries the rest of the program uses.

pub mod failed_jobs;
mod history;
mod open;
mod schema;

pub use history::*;
pub use open::{
    check, connect, default_path, expand_tilde, open, open_read_only, resolve_path, OpenError,
    BUSY_TIMEOUT,
};
pub use schema::SCHEMA_VERSION;

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch: how every time is stored.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Formats a stored time for people, in local time.
pub fn format_time(ms: i64) -> String {
    use chrono::{Local, TimeZone};
    match Local.timestamp_millis_opt(ms) {
        chrono::LocalResult::Single(t) => t.format("%Y-%m-%d %H:%M").to_string(),
        _ => "?".to_owned(),
    }
}
