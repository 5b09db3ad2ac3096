//! The TCP side channel that carries UPD and DWN bodies.
//!
//! Once the forum accepts UPD or DWN, the server issues a one-time ticket and answers
//! `TCP-open` with `[port, token]` (the token as 32 hex digits). The client connects to that
//! port on the server's host and the bytes are:
//!
//! | direction | bytes | meaning |
//! |---|---|---|
//! | client to server | 16 | the token |
//! | upload, client to server | 8 | body size, u64 big-endian (at most the server's limit) |
//! | upload, client to server | size | the body |
//! | upload, client to server | 32 | SHA-256 of the body |
//! | upload, server to client | 1 + 2 + n | status (0 stored, 1 refused), u16 big-endian length, UTF-8 message |
//! | download, server to client | 8 + size + 32 | body size, the body, its SHA-256 |
//!
//! An upload is written to a staging file and committed (renamed into place, its line added to
//! the thread) only once the size and the checksum match; anything else deletes the staging
//! file, so a broken transfer leaves nothing behind. When the disk refuses the body (full,
//! read-only), the rest of it is still read, so the client gets the verdict with the reason
//! (`notes.txt was not saved: the server's disk is full`) rather than a reset. Tickets expire,
//! are used once, and each transfer is a task of its own, concurrent with every command.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use server_kit::atomic_file::DiskTrouble;
use sha2::{Digest, Sha256};
use tokio::fs::File;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::session::{Forum, Transfer};

/// Bytes of a ticket's token.
pub const TOKEN_LEN: usize = 16;
/// Bytes of a SHA-256 digest.
pub const DIGEST_LEN: usize = 32;
const CHUNK: usize = 64 * 1024;

/// Limits of the side channel.
#[derive(Debug, Clone)]
pub struct TransferConfig {
    /// The largest upload accepted (default 1 GiB).
    pub max_upload: u64,
    /// How long a ticket may wait for its connection (default 60 s).
    pub ticket_lifetime: Duration,
    /// How long any read or write may stall (default 30 s).
    pub io_timeout: Duration,
}

impl Default for TransferConfig {
    fn default() -> Self {
        TransferConfig {
            max_upload: 1 << 30,
            ticket_lifetime: Duration::from_secs(60),
            io_timeout: Duration::from_secs(30),
        }
    }
}

/// A ticket's token.
pub type Token = [u8; TOKEN_LEN];

/// The token as the 32 hex digits `TCP-open` carries.
pub fn token_to_hex(token: &Token) -> String {
    token.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The token 32 hex digits stand for.
pub fn token_from_hex(hex: &str) -> Option<Token> {
    if hex.len() != 2 * TOKEN_LEN || !hex.is_ascii() {
        return None;
    }
    let mut token = [0; TOKEN_LEN];
    for (i, byte) in token.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(token)
}

struct Ticket {
    user: String,
    transfer: Transfer,
    expires: Instant,
}

/// Issues tickets and serves the side channel.
pub struct TransferHub {
    forum: Arc<Forum>,
    port: u16,
    tickets: Mutex<HashMap<Token, Ticket>>,
    config: TransferConfig,
}

impl std::fmt::Debug for TransferHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransferHub")
            .field("port", &self.port)
            .finish()
    }
}

impl TransferHub {
    /// A hub whose side channel is `listener` (serve it with [`TransferHub::run`]).
    pub fn new(
        forum: Arc<Forum>,
        listener: &TcpListener,
        config: TransferConfig,
    ) -> io::Result<Arc<TransferHub>> {
        Ok(Arc::new(TransferHub {
            forum,
            port: listener.local_addr()?.port(),
            tickets: Mutex::new(HashMap::new()),
            config,
        }))
    }

    /// Issues a one-time ticket for `transfer` by `user`; the `TCP-open` arguments
    /// `[port, token]`.
    pub fn issue(&self, user: &str, transfer: Transfer) -> [String; 2] {
        let token: Token = rand::random();
        let now = Instant::now();
        let mut tickets = self.tickets.lock().unwrap_or_else(PoisonError::into_inner);
        tickets.retain(|_, ticket| ticket.expires > now);
        tickets.insert(
            token,
            Ticket {
                user: user.to_owned(),
                transfer,
                expires: now + self.config.ticket_lifetime,
            },
        );
        [self.port.to_string(), token_to_hex(&token)]
    }

    /// Serves the side channel until `cancel` fires; transfers in progress are tracked by
    /// `tracker` (the server drains it at shutdown).
    pub async fn run(
        self: Arc<Self>,
        listener: TcpListener,
        tracker: TaskTracker,
        cancel: CancellationToken,
    ) {
        loop {
            let accepted = tokio::select! {
                () = cancel.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, peer)) => {
                    let hub = Arc::clone(&self);
                    tracker.spawn(async move { hub.serve(stream, peer).await });
                }
                Err(err) => {
                    warn!("transfer accept failed: {err}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    async fn serve(&self, mut stream: TcpStream, peer: SocketAddr) {
        let _ = stream.set_nodelay(true);
        let mut token = [0; TOKEN_LEN];
        let patience = self.config.io_timeout;
        if !matches!(
            timeout(patience, stream.read_exact(&mut token)).await,
            Ok(Ok(_))
        ) {
            return;
        }
        let Some(ticket) = self.take_ticket(&token) else {
            warn!(%peer, "transfer with an unknown or expired token refused");
            return;
        };
        let outcome = match ticket.transfer {
            Transfer::Upload { title, file } => {
                self.receive_upload(&mut stream, &ticket.user, &title, &file)
                    .await
            }
            Transfer::Download { title, file, path } => {
                let sent = send_file(&mut stream, &path, patience, |_, _| {}).await;
                sent.map(|size| {
                    format!(
                        "{} downloaded {file} from {title} ({size} bytes)",
                        ticket.user
                    )
                })
            }
        };
        match outcome {
            Ok(line) => info!("{line}"),
            Err(err) => warn!(%peer, "transfer of {} failed: {err}", ticket.user),
        }
    }

    fn take_ticket(&self, token: &Token) -> Option<Ticket> {
        let mut tickets = self.tickets.lock().unwrap_or_else(PoisonError::into_inner);
        tickets
            .remove(token)
            .filter(|ticket| ticket.expires > Instant::now())
    }

    async fn receive_upload(
        &self,
        stream: &mut TcpStream,
        user: &str,
        title: &str,
        file: &str,
    ) -> io::Result<String> {
        let staged = self.forum.store().upload_staging_path(title, file);
        let received = receive_body(
            stream,
            &staged,
            self.config.max_upload,
            self.config.io_timeout,
            |_, _| {},
        )
        .await;
        let verdict = match received {
            Ok(size) => self.commit(user, title, file, &staged).await.map(|()| size),
            Err(err) => Err(DiskTrouble::of(&err)
                .map_or_else(|| err.to_string(), |trouble| not_saved(file, trouble, &err))),
        };
        if verdict.is_err() {
            let _ = tokio::fs::remove_file(&staged).await;
        }
        let (status, message) = match &verdict {
            Ok(_) => (0, format!("{file} uploaded to {title} thread")),
            Err(reason) => (1, reason.clone()),
        };
        write_status(stream, status, &message).await?;
        verdict
            .map(|size| format!("{user} uploaded {file} to {title} ({size} bytes)"))
            .map_err(io::Error::other)
    }

    async fn commit(
        &self,
        user: &str,
        title: &str,
        file: &str,
        staged: &Path,
    ) -> Result<(), String> {
        let forum = Arc::clone(&self.forum);
        let (user, title, name, staged) = (
            user.to_owned(),
            title.to_owned(),
            file.to_owned(),
            staged.to_owned(),
        );
        tokio::task::spawn_blocking(move || {
            forum.store().commit_upload(&title, &user, &name, &staged)
        })
        .await
        .map_err(|err| err.to_string())?
        .map_err(|err| {
            err.disk_trouble()
                .map_or_else(|| err.to_string(), |trouble| not_saved(file, trouble, &err))
        })
    }
}

/// The verdict on an upload the disk refused (`notes.txt was not saved: the server's disk is
/// full`); the whole error goes to the log.
fn not_saved(file: &str, trouble: DiskTrouble, err: &dyn std::fmt::Display) -> String {
    warn!("the upload of {file} was not saved: {err}");
    format!("{file} was not saved: {}", trouble.describe())
}

/// Reads `size`, the body and its digest from `stream` into a new file at `path` (synced);
/// the body's size. `progress` hears (bytes so far, size) after each read. Errors say what was
/// wrong; the caller deletes `path`.
pub async fn receive_body(
    stream: &mut (impl AsyncRead + Unpin),
    path: &Path,
    max_size: u64,
    patience: Duration,
    mut progress: impl FnMut(u64, u64),
) -> io::Result<u64> {
    let size = timed(patience, stream.read_u64()).await?;
    if size > max_size {
        return Err(invalid(format!(
            "a body of {size} bytes is over the limit of {max_size}"
        )));
    }
    let mut out = BodySink::create(path).await;
    let mut hasher = Sha256::new();
    let mut buf = vec![0; CHUNK];
    let mut left = size;
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = timed(patience, stream.read(&mut buf[..want])).await?;
        if n == 0 {
            return Err(invalid(format!("the body ended {left} bytes short")));
        }
        hasher.update(&buf[..n]);
        out.write(&buf[..n]).await;
        left -= n as u64;
        progress(size - left, size);
    }
    let mut digest = [0; DIGEST_LEN];
    timed(patience, stream.read_exact(&mut digest)).await?;
    if digest[..] != hasher.finalize()[..] {
        return Err(invalid("the body does not match its checksum".into()));
    }
    out.finish().await?;
    Ok(size)
}

/// Where a received body goes: its file, until the disk refuses a write (full, read-only);
/// then nowhere, so that the rest of the body is still read and the sender hears the reason
/// rather than a reset connection.
struct BodySink {
    file: io::Result<File>,
}

impl BodySink {
    async fn create(path: &Path) -> BodySink {
        BodySink {
            file: File::create(path).await,
        }
    }

    async fn write(&mut self, bytes: &[u8]) {
        if let Ok(file) = &mut self.file {
            if let Err(err) = file.write_all(bytes).await {
                self.file = Err(err);
            }
        }
    }

    /// Flushes and syncs the file; the first error the disk gave, if any. The flush matters:
    /// tokio hands each write to a blocking task, and the last one's failure surfaces only at
    /// the next write or flush, which `sync_all` does not report.
    async fn finish(self) -> io::Result<()> {
        let mut file = self.file?;
        file.flush().await?;
        file.sync_all().await
    }
}

/// Writes the size, the body of the file at `path` and its digest to `stream`; the size.
/// `progress` hears (bytes so far, size) after each write.
pub async fn send_file(
    stream: &mut (impl AsyncWrite + Unpin),
    path: &Path,
    patience: Duration,
    mut progress: impl FnMut(u64, u64),
) -> io::Result<u64> {
    let mut input = File::open(path).await?;
    let size = input.metadata().await?.len();
    timed(patience, stream.write_u64(size)).await?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0; CHUNK];
    let mut sent = 0;
    while sent < size {
        let n = input.read(&mut buf).await?;
        if n == 0 {
            return Err(invalid(format!(
                "{} shrank while being sent",
                path.display()
            )));
        }
        hasher.update(&buf[..n]);
        timed(patience, stream.write_all(&buf[..n])).await?;
        sent += n as u64;
        progress(sent, size);
    }
    timed(patience, stream.write_all(&hasher.finalize())).await?;
    timed(patience, stream.flush()).await?;
    Ok(size)
}

/// Writes an upload's verdict.
async fn write_status(stream: &mut TcpStream, status: u8, message: &str) -> io::Result<()> {
    let message = &message.as_bytes()[..message.len().min(usize::from(u16::MAX))];
    let mut out = vec![status];
    out.extend_from_slice(&(message.len() as u16).to_be_bytes());
    out.extend_from_slice(message);
    stream.write_all(&out).await?;
    stream.shutdown().await
}

/// Reads an upload's verdict: `Ok(message)` when stored, `Err(message)` when refused.
pub async fn read_status(
    stream: &mut (impl AsyncRead + Unpin),
    patience: Duration,
) -> io::Result<Result<String, String>> {
    let status = timed(patience, stream.read_u8()).await?;
    let len = timed(patience, stream.read_u16()).await?;
    let mut message = vec![0; usize::from(len)];
    timed(patience, stream.read_exact(&mut message)).await?;
    let message = String::from_utf8_lossy(&message).into_owned();
    Ok(if status == 0 {
        Ok(message)
    } else {
        Err(message)
    })
}

async fn timed<T>(patience: Duration, io: impl Future<Output = io::Result<T>>) -> io::Result<T> {
    timeout(patience, io).await.map_err(|_| {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no progress for {patience:?}"),
        )
    })?
}

fn invalid(reason: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_as_hex() {
        let token: Token = rand::random();
        assert_eq!(token_from_hex(&token_to_hex(&token)), Some(token));
        assert_eq!(token_from_hex("zz"), None);
        assert_eq!(token_from_hex(&"g".repeat(32)), None);
    }

    #[tokio::test]
    async fn a_body_round_trips_and_a_corrupted_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("source.bin");
        let body: Vec<u8> = (0..200_000u32).map(|i| (i * 7) as u8).collect();
        std::fs::write(&source, &body).unwrap();
        let mut wire = Vec::new();
        let sent = send_file(&mut wire, &source, Duration::from_secs(5), |_, _| {})
            .await
            .unwrap();
        assert_eq!(sent, body.len() as u64);
        assert_eq!(wire.len(), 8 + body.len() + DIGEST_LEN);

        let copy = dir.path().join("copy.bin");
        let receive = async |wire: &[u8], limit: u64| {
            receive_body(
                &mut &wire[..],
                &copy,
                limit,
                Duration::from_secs(5),
                |_, _| {},
            )
            .await
        };
        assert_eq!(receive(&wire, 1 << 20).await.unwrap(), body.len() as u64);
        assert_eq!(std::fs::read(&copy).unwrap(), body);

        let mut corrupted = wire.clone();
        corrupted[1000] ^= 1;
        let refusals = [
            (receive(&corrupted, 1 << 20).await, "checksum"),
            (receive(&wire[..5000], 1 << 20).await, "short"),
            (receive(&wire, 1000).await, "over the limit"),
        ];
        for (outcome, why) in refusals {
            let err = outcome.unwrap_err();
            assert!(err.to_string().contains(why), "{err}");
        }
    }

    #[tokio::test]
    async fn a_body_the_disk_refuses_is_still_read_to_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("source.bin");
        std::fs::write(&source, vec![7; 150_000]).unwrap();
        let mut wire = Vec::new();
        send_file(&mut wire, &source, Duration::from_secs(5), |_, _| {})
            .await
            .unwrap();
        // A staging file that cannot be created stands for a full or read-only disk.
        let unwritable = dir.path().join("missing-folder").join("staged");
        let mut stream = &wire[..];
        let err = receive_body(
            &mut stream,
            &unwritable,
            1 << 20,
            Duration::from_secs(5),
            |_, _| {},
        )
        .await
        .unwrap_err();
        assert_eq!(
            err.kind(),
            io::ErrorKind::NotFound,
            "the disk's error: {err}"
        );
        assert!(stream.is_empty(), "the whole body and its digest were read");
    }
}
