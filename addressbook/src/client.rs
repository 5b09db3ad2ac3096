//! The address-book client: looks e-mails up over one connection, pipelining batches of queries.

use std::io;
use std::time::Duration;

use protocol::addressbook::{
    AddressBookCodec, AddressBookError, Kind, MAX_BODY_LEN, Message, NOT_FOUND, UNKNOWN_PROTOCOL,
};
use protocol::framed::{self, FramedConnection};
use thiserror::Error;
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio::time::timeout;

use crate::server::SERVER_BUSY;

/// Queries in flight at once when looking up many e-mails: few enough that the answers always fit
/// the socket buffers, so neither side can block the other.
pub const PIPELINE_WINDOW: usize = 64;

/// The answer to one query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The e-mail belongs to this name.
    Found(String),
    /// The e-mail is not in the book.
    NotFound,
}

/// What can go wrong talking to the server.
#[derive(Debug, Error)]
pub enum ClientError {
    /// Local misuse: the e-mail cannot be sent at all.
    #[error("the e-mail {email:?} is {len} bytes; the protocol carries at most {MAX_BODY_LEN}", len = email.len())]
    EmailTooLong {
        /// The refused address.
        email: String,
    },
    /// The server could not be reached.
    #[error("cannot connect to the address book at {addr}: {source}")]
    Connect {
        /// The address tried.
        addr: String,
        /// What the OS said.
        source: io::Error,
    },
    /// The server sent no answer in time.
    #[error("the server did not answer within {0:?}")]
    Timeout(Duration),
    /// The server closed the connection before answering.
    #[error("the server closed the connection before answering")]
    Closed,
    /// The server sent something that is not an answer.
    #[error("the server broke the protocol: {0}")]
    Protocol(String),
    /// The server said our query broke the protocol.
    #[error("the server rejected the query: {UNKNOWN_PROTOCOL}")]
    Rejected,
    /// The server is serving as many connections as it may and turned this one away.
    #[error("the server is busy (all its connections are in use); try again later")]
    Busy,
    /// The connection failed.
    #[error("connection error: {0}")]
    Io(#[from] io::Error),
}

impl ClientError {
    /// True when the connection ended under us (reset, closed, broken pipe): a fresh connection
    /// may succeed, for instance after the server closed an idle one.
    pub fn is_connection_lost(&self) -> bool {
        match self {
            ClientError::Closed => true,
            ClientError::Io(err) => framed::is_connection_lost(err),
            _ => false,
        }
    }
}

impl From<AddressBookError> for ClientError {
    fn from(err: AddressBookError) -> Self {
        match err {
            AddressBookError::Io(err) => ClientError::Io(err),
            other => ClientError::Protocol(other.to_string()),
        }
    }
}

/// Refuses an e-mail that cannot be sent, before anything is sent.
pub fn check_email(email: &str) -> Result<(), ClientError> {
    if email.len() > MAX_BODY_LEN {
        return Err(ClientError::EmailTooLong {
            email: email.to_owned(),
        });
    }
    Ok(())
}

/// A connection to an address-book server.
#[derive(Debug)]
pub struct Client {
    conn: FramedConnection<TcpStream, AddressBookCodec>,
    reply_timeout: Duration,
}

impl Client {
    /// Connects to `addr`; both connecting and each answer are bounded by `reply_timeout`.
    pub async fn connect(
        addr: impl ToSocketAddrs + std::fmt::Display,
        reply_timeout: Duration,
    ) -> Result<Client, ClientError> {
        let connect_error = |source| ClientError::Connect {
            addr: addr.to_string(),
            source,
        };
        let stream = server_kit::connect(&addr, reply_timeout)
            .await
            .map_err(connect_error)?;
        Ok(Client {
            conn: FramedConnection::new(stream, AddressBookCodec),
            reply_timeout,
        })
    }

    /// Looks one e-mail up.
    pub async fn lookup(&mut self, email: &str) -> Result<Lookup, ClientError> {
        check_email(email)?;
        self.conn.send(Message::query(email)?).await?;
        self.read_answer().await
    }

    /// Looks many e-mails up over this connection, [`PIPELINE_WINDOW`] queries in flight at a
    /// time; the answers come back in the order of `emails`. Every e-mail is checked before the
    /// first is sent.
    pub async fn lookup_all(&mut self, emails: &[String]) -> Result<Vec<Lookup>, ClientError> {
        for email in emails {
            check_email(email)?;
        }
        let mut answers = Vec::with_capacity(emails.len());
        for window in emails.chunks(PIPELINE_WINDOW) {
            for email in window {
                self.conn.queue(Message::query(email.as_str())?)?;
            }
            self.conn.flush().await?;
            for _ in window {
                answers.push(self.read_answer().await?);
            }
        }
        Ok(answers)
    }

    async fn read_answer(&mut self) -> Result<Lookup, ClientError> {
        let message = timeout(self.reply_timeout, self.conn.read_frame())
            .await
            .map_err(|_| ClientError::Timeout(self.reply_timeout))??
            .ok_or(ClientError::Closed)?;
        if message.kind() != Kind::Response {
            return Err(ClientError::Protocol("the server sent a query".into()));
        }
        Ok(match message.body() {
            NOT_FOUND => Lookup::NotFound,
            UNKNOWN_PROTOCOL => return Err(ClientError::Rejected),
            SERVER_BUSY => return Err(ClientError::Busy),
            _ => Lookup::Found(message.into_body()),
        })
    }
}
