//! Log output: `tracing` events to stderr, filtered by RUST_LOG or a per-command default.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Sends log events to stderr. `default_filter` applies when RUST_LOG is unset or invalid:
/// servers default to `info`, clients and the demo to `warn` so their stdout stays clean.
pub fn init(default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}
