//! System 2 (seed 001): a discussion forum whose commands travel over UDP (on the
//! reliable-datagram layer) or TCP, with a TCP side channel for file upload and download.
//!
//! The modules (`cli forum serve|connect` runs them):
//! - [`names`]: titles, file names, usernames, passwords and texts, checked before use.
//! - [`accounts`]: `credentials.txt` with argon2 hashes; the assignment's plaintext lines are
//!   upgraded at start-up.
//! - [`thread`]: one thread file's format.
//! - [`store`]: threads and uploads on disk, every change atomic, every refusal explained.
//! - [`session`]: one client's log-in and commands, whatever transport carries them.
//! - [`transfer`]: the TCP side channel for UPD and DWN bodies, size-prefixed and checksummed.
//! - [`channel`]: envelopes over TCP (length-prefixed) or UDP (reliable-datagram messages).
//! - [`server`]: [`server::run`] serves either transport until a shutdown future or an SHT.
//! - [`client`]: [`client::ForumClient`], a session over either transport, with transfers.

pub mod accounts;
pub mod channel;
pub mod client;
pub mod names;
pub mod server;
pub mod session;
pub mod store;
pub mod thread;
pub mod transfer;

pub use session::{Forum, Reply, Session, Transfer};

/// Why the forum could not open its data folder.
#[derive(Debug, thiserror::Error)]
pub enum ForumOpenError {
    /// The accounts file.
    #[error(transparent)]
    Accounts(#[from] accounts::AccountError),
    /// The threads and uploads.
    #[error(transparent)]
    Store(#[from] store::StoreError),
}
