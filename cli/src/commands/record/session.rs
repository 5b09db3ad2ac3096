//! A connection to a record server that is made on first use, made again if the server dropped
//! it (it closes idle connections), and authenticated for each id it touches when a password was
//! given.

use std::collections::HashSet;
use std::time::Duration;

use record_server::{ClientError, RecordClient, ServerStatus, StudentRecord};

/// One user's conversation with a record server.
pub struct Session {
    server: String,
    patience: Duration,
    password: Option<String>,
    connection: Option<Connection>,
}

/// A connection and the ids it authenticated for.
struct Connection {
    client: RecordClient,
    authenticated: HashSet<String>,
}

impl Session {
    /// A session with `server` (`HOST:PORT`), waiting at most `patience` to connect or for an
    /// answer, sending `password` (request type 4) for each id before reading or writing it.
    pub fn new(server: String, patience: Duration, password: Option<String>) -> Session {
        Session {
            server,
            patience,
            password,
            connection: None,
        }
    }

    /// Connects now, unless connected already.
    pub async fn connect(&mut self) -> Result<(), ClientError> {
        connected(&mut self.connection, &self.server, self.patience).await?;
        Ok(())
    }

    /// Stores the seed client's form; the server's confirmation.
    pub async fn write(&mut self, record: &StudentRecord) -> Result<String, ClientError> {
        self.run(Some(&record.id), async |client| {
            client.write_record(record).await
        })
        .await
    }

    /// The record of `id`, or `None` when the server has none.
    pub async fn read(&mut self, id: &str) -> Result<Option<String>, ClientError> {
        self.run(Some(id), async |client| client.read(id).await)
            .await
    }

    /// The server's status.
    pub async fn info(&mut self) -> Result<ServerStatus, ClientError> {
        self.run(None, async |client| client.info().await).await
    }

    /// Runs `op` about `id` once, and once more on a fresh connection if the one it had was
    /// found closed.
    async fn run<T>(
        &mut self,
        id: Option<&str>,
        op: impl AsyncFn(&mut RecordClient) -> Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        let had_connection = self.connection.is_some();
        match self.attempt(id, &op).await {
            Err(err) if had_connection && err.is_connection_lost() => {
                self.connection = None;
                self.attempt(id, &op).await
            }
            outcome => outcome,
        }
    }

    async fn attempt<T>(
        &mut self,
        id: Option<&str>,
        op: &impl AsyncFn(&mut RecordClient) -> Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        let connection = connected(&mut self.connection, &self.server, self.patience).await?;
        if let (Some(id), Some(password)) = (id, &self.password) {
            connection.authenticate(id, password).await?;
        }
        op(&mut connection.client).await
    }
}

/// The connection in `slot`, made first if there is none.
async fn connected<'a>(
    slot: &'a mut Option<Connection>,
    server: &str,
    patience: Duration,
) -> Result<&'a mut Connection, ClientError> {
    let connection = match slot.take() {
        Some(connection) => connection,
        None => Connection {
            client: RecordClient::connect(server, patience).await?,
            authenticated: HashSet::new(),
        },
    };
    Ok(slot.insert(connection))
}

impl Connection {
    /// Sends the password for `id` unless this connection already did; the server's confirmation
    /// (password set, or accepted) goes to stderr.
    async fn authenticate(&mut self, id: &str, password: &str) -> Result<(), ClientError> {
        if !self.authenticated.contains(id) {
            let confirmation = self.client.authenticate(id, password).await?;
            eprintln!("{confirmation}");
            self.authenticated.insert(id.to_owned());
        }
        Ok(())
    }
}
