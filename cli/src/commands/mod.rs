//! One module per system's subcommands, plus the demo and the benchmarks.

pub mod addressbook;
pub mod bench;
pub mod chat;
pub mod demo;
pub mod forum;
pub mod record;
pub mod record_server;
pub mod scratch;

/// A multi-threaded tokio runtime for one command.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(runtime_builder().build()?)
}

/// How [`runtime`] is built, for a caller that adds to it (the benchmarks name the threads).
pub fn runtime_builder() -> tokio::runtime::Builder {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    builder
}

/// The first address `target` (`"HOST:PORT"`, or a `(host, port)` pair) resolves to; errors
/// name it as `shown`.
pub async fn resolve(
    target: impl tokio::net::ToSocketAddrs,
    shown: &str,
) -> anyhow::Result<std::net::SocketAddr> {
    use anyhow::Context;
    tokio::net::lookup_host(target)
        .await
        .with_context(|| format!("cannot resolve {shown}"))?
        .next()
        .with_context(|| format!("{shown} has no address"))
}

/// Prints a server's status line to stdout. A server outlives whoever reads its stdout (a
/// `| head -1`, a test that only wanted the port), so a closed stdout is ignored rather than fatal.
pub fn status_line(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{line}");
}
