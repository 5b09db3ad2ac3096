//! The record client: one connection, one request at a time, each written in one piece as the
//! seed's client writes it. An error response becomes [`ClientError::Refused`] with the server's
//! words, except the seed's read miss, which is `Ok(None)`.

use std::io;
use std::time::Duration;

use protocol::framed::{self, FramedConnection};
use protocol::record::{
    ClientCodec, READ_MISS, RecordError, Request, RequestKind, Response, ResponseKind,
};
use thiserror::Error;
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio::time::timeout;

use crate::status::ServerStatus;
use crate::timestamp::{PREFIX, Timestamp};

/// What can go wrong talking to the server.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The server could not be reached.
    #[error("cannot connect to the record server at {addr}: {source}")]
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
    /// An earlier request timed out, so its late answer could be taken for the next one's: the
    /// connection is not used again.
    #[error("the connection is out of step after an earlier timeout; connect again")]
    OutOfStep,
    /// The server answered with an error.
    #[error("{0}")]
    Refused(String),
    /// The server sent something that is not the expected answer.
    #[error("the server broke the protocol: {0}")]
    Protocol(String),
    /// The connection failed.
    #[error("connection error: {0}")]
    Io(#[from] io::Error),
}

impl From<RecordError> for ClientError {
    fn from(err: RecordError) -> Self {
        match err {
            RecordError::Io(err) if err.kind() == io::ErrorKind::UnexpectedEof => {
                ClientError::Closed
            }
            RecordError::Io(err) => ClientError::Io(err),
            other => ClientError::Protocol(other.to_string()),
        }
    }
}

impl ClientError {
    /// True when the connection ended under us (closed, reset): a fresh connection may succeed,
    /// for instance after the server closed an idle one.
    pub fn is_connection_lost(&self) -> bool {
        match self {
            ClientError::Closed | ClientError::OutOfStep => true,
            ClientError::Io(err) => framed::is_connection_lost(err),
            _ => false,
        }
    }
}

/// The seed client's form: what a student enters for a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StudentRecord {
    /// Student ID.
    pub id: String,
    /// Name.
    pub name: String,
    /// Date of Birth.
    pub date_of_birth: String,
    /// City.
    pub city: String,
    /// Reason for taking the class.
    pub reason: String,
}

impl StudentRecord {
    /// The `data` of a write, as the seed's client builds it: a `Last updated:` line (which the
    /// server replaces with its own), then one `Field: value` line per field, no final newline.
    pub fn to_data(&self, at: Timestamp) -> String {
        format!(
            "{PREFIX}{at}\nStudent ID: {}\nName: {}\nDate of Birth: {}\nCity: {}\nReason: {}",
            self.id, self.name, self.date_of_birth, self.city, self.reason
        )
    }
}

/// A connection to a record server.
#[derive(Debug)]
pub struct RecordClient {
    conn: FramedConnection<TcpStream, ClientCodec>,
    patience: Duration,
    /// Set when a request timed out: answers may no longer match requests.
    out_of_step: bool,
}

impl RecordClient {
    /// Connects to `addr`; connecting and every answer later wait at most `patience`.
    pub async fn connect(
        addr: impl ToSocketAddrs + std::fmt::Display,
        patience: Duration,
    ) -> Result<RecordClient, ClientError> {
        let shown = addr.to_string();
        let stream = match server_kit::connect(addr, patience).await {
            Ok(stream) => stream,
            Err(err) if err.kind() == io::ErrorKind::TimedOut => {
                return Err(ClientError::Timeout(patience));
            }
            Err(source) => {
                return Err(ClientError::Connect {
                    addr: shown,
                    source,
                });
            }
        };
        Ok(RecordClient {
            conn: FramedConnection::new(stream, ClientCodec::default()),
            patience,
            out_of_step: false,
        })
    }

    /// Sends `request` and returns the response as it came, whatever its type.
    /// After a timeout the connection refuses further requests with
    /// [`ClientError::OutOfStep`].
    pub async fn request(&mut self, request: &Request) -> Result<Response, ClientError> {
        if self.out_of_step {
            return Err(ClientError::OutOfStep);
        }
        self.conn.send(request).await?;
        match timeout(self.patience, self.conn.read_frame()).await {
            Err(_) => {
                self.out_of_step = true;
                Err(ClientError::Timeout(self.patience))
            }
            Ok(Ok(Some(response))) => Ok(response),
            Ok(Ok(None)) => Err(ClientError::Closed),
            Ok(Err(err)) => Err(err.into()),
        }
    }

    /// Stores `data` as the record of `id`; the server's confirmation.
    pub async fn write(&mut self, id: &str, data: &str) -> Result<String, ClientError> {
        let response = self
            .request(&Request::new(id, RequestKind::Write, data))
            .await?;
        expect(response, ResponseKind::Success)
    }

    /// Stores the seed client's form, stamped now.
    pub async fn write_record(&mut self, record: &StudentRecord) -> Result<String, ClientError> {
        self.write(&record.id, &record.to_data(Timestamp::now()))
            .await
    }

    /// The record of `id`, or `None` when the server has none.
    pub async fn read(&mut self, id: &str) -> Result<Option<String>, ClientError> {
        let response = self
            .request(&Request::new(id, RequestKind::Read, ""))
            .await?;
        if response.kind == ResponseKind::Error && response.data == READ_MISS {
            return Ok(None);
        }
        expect(response, ResponseKind::Success).map(Some)
    }

    /// The server's status.
    pub async fn info(&mut self) -> Result<ServerStatus, ClientError> {
        let response = self
            .request(&Request::new("info", RequestKind::Info, ""))
            .await?;
        let data = expect(response, ResponseKind::Info)?;
        serde_json::from_str(&data)
            .map_err(|err| ClientError::Protocol(format!("unreadable status {data:?}: {err}")))
    }

    /// Sets (the first time) or checks the password of `id`; this connection may then read and
    /// write `id`. The server's confirmation.
    pub async fn authenticate(&mut self, id: &str, password: &str) -> Result<String, ClientError> {
        let response = self
            .request(&Request::new(id, RequestKind::Auth, password))
            .await?;
        expect(response, ResponseKind::Success)
    }
}

/// The response's data if it is of the `wanted` kind; its data as the reason if it is an error.
fn expect(response: Response, wanted: ResponseKind) -> Result<String, ClientError> {
    match response.kind {
        kind if kind == wanted => Ok(response.data),
        ResponseKind::Error => Err(ClientError::Refused(response.data)),
        other => Err(ClientError::Protocol(format!(
            "expected a response of type {}, got type {}",
            wanted.code(),
            other.code()
        ))),
    }
}
