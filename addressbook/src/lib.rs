//! System 3 (seed 002): an e-mail to name lookup over TCP.
//!
//! A client sends `Q` + a signed length byte + the e-mail; the server answers `R` + length + the
//! owner's name, or `R` + `Error 404` when the e-mail is not in the book (wire format in
//! [`protocol::addressbook`]). A connection over the server's limit is answered `R` +
//! [`SERVER_BUSY`] and closed.
//!
//! - [`book`]: the entries, built in or loaded from a CSV or JSON file.
//! - [`server`]: [`server::run`] serves a listener until a shutdown future completes.
//! - [`client`]: [`client::Client`] looks e-mails up over one connection.

pub mod book;
pub mod client;
pub mod server;

pub use book::{AddressBook, BookError};
pub use client::{Client, ClientError, Lookup};
pub use server::{SERVER_BUSY, ServerConfig, run};
