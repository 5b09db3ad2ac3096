//! `cli chat ...`: the chat room of seed 003 (`serve`, `join`), its TCP-versus-UDP file
//! transfer (`transfer`), and the peer-to-peer chat of seed 004 (`signal`, `peer`).

mod p2p;
mod peer_commands;
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
    /// Serve the peer-to-peer chat's signaling server (seed 004) until Ctrl+C or SIGTERM.
    ///
    /// Peers sign up and log in (argon2-hashed passwords in DATA_DIR/accounts.json), announce
    /// their UDP address, list and query each other within each one's visibility, and are
    /// introduced with a fresh session key; the chat itself goes straight between the peers.
    /// Frames are the room's 10-byte header, each holding one JSON message (docs/chat-p2p.md).
    Signal(p2p::SignalArgs),
    /// Be a peer of the peer-to-peer chat: log in to the signaling server, then talk, send
    /// files and stream media straight to another peer over UDP, every datagram encrypted and
    /// authenticated with the session's key.
    ///
    /// Type /help for the commands. With piped stdin it runs as a script: /connect waits for
    /// the answer and /accept or /decline for an introduction before the next line; at the end
    /// of the input it finishes its own transfers and stays until the other peer closes the
    /// session. Received messages print as `USER > text`; received files are saved in
    /// --download-dir under their own name.
    Peer(p2p::PeerArgs),
}

/// Runs a chat subcommand.
pub fn run(command: ChatCommand) -> anyhow::Result<ExitCode> {
    match command {
        ChatCommand::Serve(args) => room::serve(args),
        ChatCommand::Join(args) => room::join(args),
        ChatCommand::Transfer(command) => transfer::run(command),
        ChatCommand::Signal(args) => p2p::serve_signal(args),
        ChatCommand::Peer(args) => p2p::peer(args),
    }
}
