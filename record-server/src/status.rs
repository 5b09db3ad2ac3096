//! What an info request (type 3) answers: the server's status, as JSON text in `data`.

use serde::{Deserialize, Serialize};

/// The server's status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerStatus {
    /// Connections being served, the asker's included.
    pub connections: usize,
    /// MAX_CONNECTION.
    pub max_connections: usize,
    /// Records stored.
    pub records: usize,
    /// Seconds since the server started.
    pub uptime_seconds: u64,
    /// Whether reads and writes need a password.
    pub require_auth: bool,
}
