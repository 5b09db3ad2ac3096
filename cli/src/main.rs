//! `cli`: the one binary that runs every server and client of the workspace.
//!
//! It holds no protocol or service logic: it parses arguments, prompts, prints and chooses exit
//! codes, and calls the service libraries for everything else.

mod commands;
mod logging;
mod signals;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use commands::addressbook::AddressbookCommand;

/// Reference servers and clients for classic socket-programming systems.
///
/// Each system keeps its original wire format byte for byte, so the course's own Python clients
/// work against these servers. Servers log to stderr; set RUST_LOG (e.g. RUST_LOG=debug) to
/// change how much they say.
#[derive(Debug, Parser)]
#[command(name = "cli", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Address book (seed 002): e-mail to name lookup over TCP with a `!cb` Q/R header.
    #[command(subcommand)]
    Addressbook(AddressbookCommand),
    /// Run every system on loopback, show what crosses the wire, stop, and exit 0.
    Demo,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Addressbook(command) => commands::addressbook::run(command),
        Command::Demo => commands::demo::run(),
    };
    outcome.unwrap_or_else(|err| {
        eprintln!("error: {err:#}");
        ExitCode::from(2)
    })
}
