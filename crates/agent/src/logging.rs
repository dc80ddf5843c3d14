//! The application's logger: quiet by default, `--debug` or `RUST_LOG` for
//! more, always to standard error so replies on standard output stay clean.

use tracing_subscriber::EnvFilter;

/// Installs the logger.
pub fn init(debug: bool) {
    let filter = if debug {
        EnvFilter::new("nu_agent=debug,warn")
    } else {
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"))
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
