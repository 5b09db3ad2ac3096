//! `cli chat ...`: the chat room of seed 003 (`serve`, `join`) and its TCP-versus-UDP file
//! transfer (`transfer`).

mod room;
mod transfer;

use std::process::ExitCode;

use clap::Subcommand;

pub use transfer::TransferCommand;
pub(crate) use transfer::print_reports;

/// The chat subcommands.
#[derive(Debug, Subcommand)]
pub enum ChatCommand {
    /// Serve the chat room until Ctrl+C or SIGTERM; the seed's Python client works unchanged.
    ///
    /// Every frame is a 10-byte ASCII length header and the payload; a client's first frame is
    /// its username, and each later one is relayed to every other client as the sender's
    /// username frame followed by its message frame. Logs joins, leaves and refusals on stderr
    /// (RUST_LOG=debug shows every message).
    Serve(room::ServeArgs),
    /// Join the room: lines typed (or piped) are sent, messages from the others print as
    /// `user > text` while you type.
    ///
    /// With piped stdin, each line is sent, and messages are printed for --linger seconds after
    /// the end of the input. Exits 1 if the server closes the connection.
    Join(room::JoinArgs),
    /// Send a file over TCP and over plain UDP and report what each transport did (seed 003,
    /// task 3).
    #[command(subcommand)]
    Transfer(TransferCommand),
}

/// Runs a chat subcommand.
pub fn run(command: ChatCommand) -> anyhow::Result<ExitCode> {
    match command {
        ChatCommand::Serve(args) => room::serve(args),
        ChatCommand::Join(args) => room::join(args),
        ChatCommand::Transfer(command) => transfer::run(command),
    }
}
