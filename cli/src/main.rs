//! `cli`: the one binary that runs every server and client of the workspace.
//!
//! It holds no protocol or service logic: it parses arguments, prompts, prints and chooses exit
//! codes, and calls the service libraries for everything else.

mod commands;
mod logging;
mod progress;
mod prompt;
mod signals;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use commands::addressbook::AddressbookCommand;
use commands::bench::BenchCommand;
use commands::chat::ChatCommand;
use commands::forum::ForumCommand;
use commands::record::RecordCommand;
use commands::record_server::RecordServerArgs;

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
    /// Record server (seed 000): student records over TCP as JSON, until Ctrl+C or SIGTERM.
    ///
    /// Configured like the seed's server.py by a `.env` file (see below), the environment and
    /// flags. Prints the seed's start-up lines on stdout, then logs each connection, request and
    /// updater pass on stderr (RUST_LOG, default info). On Ctrl+C or SIGTERM it closes every
    /// connection, saves the record file and exits 0. The seed's Python client works unchanged.
    RecordServer(RecordServerArgs),
    /// Record server clients (seed 000): the seed's interactive menu, and write, read and info
    /// for scripts.
    #[command(subcommand)]
    Record(RecordCommand),
    /// Forum (seed 001): threads, messages and files, commands over UDP (reliable-datagram
    /// layer) or TCP.
    #[command(subcommand)]
    Forum(ForumCommand),
    /// Address book (seed 002): e-mail to name lookup over TCP with a `!cb` Q/R header.
    #[command(subcommand)]
    Addressbook(AddressbookCommand),
    /// Chat (seeds 003, 004): the 10-byte-header chat room and the TCP-versus-UDP file
    /// transfer.
    #[command(subcommand)]
    Chat(ChatCommand),
    /// Run every system on loopback, show what crosses the wire, stop, and exit 0.
    Demo,
    /// Measure throughput over loopback and print a table.
    #[command(subcommand)]
    Bench(BenchCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::RecordServer(args) => commands::record_server::run(args),
        Command::Record(command) => commands::record::run(command),
        Command::Forum(command) => commands::forum::run(command),
        Command::Addressbook(command) => commands::addressbook::run(command),
        Command::Chat(command) => commands::chat::run(command),
        Command::Demo => commands::demo::run(),
        Command::Bench(command) => commands::bench::run(command),
    };
    outcome.unwrap_or_else(|err| {
        eprintln!("error: {}", describe_error(&err));
        ExitCode::from(2)
    })
}

/// The error and its causes, `: `-separated, leaving out a cause its parent's message already
/// quotes (library errors often end with their source's text, as `... at ADDR: {source}`).
fn describe_error(err: &anyhow::Error) -> String {
    let mut text = err.to_string();
    for cause in err.chain().skip(1).map(ToString::to_string) {
        if !text.contains(&cause) {
            text = format!("{text}: {cause}");
        }
    }
    text
}
