//! System 1 (seed 000): student records stored as text files, behind a JSON request/response
//! protocol over TCP (wire format in [`protocol::record`]).
//!
//! - [`config`]: the `.env` settings, the environment and flags over them.
//! - [`store`]: `<id>.txt` files and the record file, written atomically, reconciled at start-up;
//!   [`index`] is the record file's content, [`timestamp`] its `Last updated:` lines,
//!   [`record_id`] the ids that may name a file.
//! - [`passwords`]: per-id argon2 password hashes for `REQUIRE_AUTH=true`.
//! - [`updater`]: the periodic timestamp refresh.
//! - [`server`]: [`server::run`] serves a listener until a shutdown future completes.
//! - [`client`]: [`client::RecordClient`] speaks to a server; [`client::StudentRecord`] is the
//!   seed client's form.

pub mod client;
pub mod config;
pub mod index;
pub mod passwords;
pub mod record_id;
pub mod server;
pub mod status;
pub mod store;
pub mod timestamp;
pub mod updater;

pub use client::{ClientError, RecordClient, StudentRecord};
pub use config::{ConfigError, Overrides, Settings};
pub use record_id::RecordId;
pub use server::{ServerConfig, run};
pub use status::ServerStatus;
pub use store::{OpenReport, RecordStore, StoreError};
