//! File transfers inside a session. Sending: the file is checked and hashed before the offer,
//! then a background task reads it chunk by chunk and hands each chunk to the driver, which
//! holds it back while the send queue is full; progress is what the peer acknowledged.
//! Receiving: an offer opens a temporary file in the download folder ([`crate::transfer::files`]),
//! chunks are gathered in order and written a batch at a time on the blocking pool, and
//! once the last one is in, a task reads the file back for its SHA-256, flushes it and
//! renames it to a free name, and the driver sends the verdict back. A transfer cut short
//! leaves no file behind.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::File;
use std::io::{self, Read, Seek};
use std::path::Path;

use bytes::{Bytes, BytesMut};
use protocol::chat_transfer::check_file_name;
use protocol::p2p::session::{Digest, MAX_CHUNK_BYTES, MAX_REASON_BYTES, SessionMessage};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt, BufReader};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::driver::{Command, Driver, Rejected};
use super::{Direction, SessionConfig, SessionError, SessionEvent, request};
use crate::transfer::files::{self as part, PartFile};

/// Files received at once (being written or checked); a further offer is refused.
pub(super) const MAX_INCOMING: usize = 16;
/// Transfers refused or finished whose late messages are ignored rather than taken for a
/// protocol violation.
const REMEMBERED: usize = 64;
/// Bytes of a received file written to disk at a time.
const WRITE_BATCH: usize = 1024 * 1024;
/// The buffer a sent file is read through.
const READ_BUFFER: usize = 256 * 1024;
/// What a chunk message adds to its data, with room to spare.
const CHUNK_MESSAGE_OVERHEAD: usize = 32;

/// A file checked and hashed, ready to be offered.
#[derive(Debug)]
pub(super) struct Prepared {
    /// The file, open at its start.
    pub(super) file: File,
    /// The name offered.
    pub(super) name: String,
    /// Its size (the bytes hashed).
    pub(super) size: u64,
    /// Its SHA-256.
    pub(super) sha256: Digest,
}

/// Opens `path` for sending: a regular file whose name the peer can take; the file, that
/// name and its size.
pub(super) async fn open_regular(path: &Path) -> Result<(File, String, u64), SessionError> {
    let name = offered_name(path)?;
    let owned = path.to_owned();
    let opened = tokio::task::spawn_blocking(move || -> io::Result<(File, bool, u64)> {
        let file = File::open(&owned)?;
        let metadata = file.metadata()?;
        Ok((file, metadata.is_file(), metadata.len()))
    })
    .await
    .map_err(io::Error::other)
    .and_then(|opened| opened)
    .map_err(|source| SessionError::File {
        path: path.to_owned(),
        source,
    })?;
    match opened {
        (file, true, size) => Ok((file, name, size)),
        _ => Err(SessionError::NotAFile {
            path: path.to_owned(),
        }),
    }
}

/// The name `path` is offered under, checked as the receiver will check it.
fn offered_name(path: &Path) -> Result<String, SessionError> {
    let name = path.file_name().ok_or_else(|| SessionError::NotAFile {
        path: path.to_owned(),
    })?;
    let name = name.to_str().ok_or_else(|| SessionError::BadName {
        path: path.to_owned(),
        reason: "the name is not UTF-8".to_owned(),
    })?;
    check_file_name(name).map_err(|error| SessionError::BadName {
        path: path.to_owned(),
        reason: error.to_string(),
    })?;
    Ok(name.to_owned())
}

/// Opens and hashes `path` (on the blocking pool) for an offer.
pub(super) async fn prepare(path: &Path) -> Result<Prepared, SessionError> {
    let (file, name, _) = open_regular(path).await?;
    let hashed = tokio::task::spawn_blocking(move || hash_from_start(file))
        .await
        .map_err(io::Error::other)
        .and_then(|hashed| hashed)
        .map_err(|source| SessionError::File {
            path: path.to_owned(),
            source,
        })?;
    let (file, size, sha256) = hashed;
    Ok(Prepared {
        file,
        name,
        size,
        sha256,
    })
}

/// The SHA-256 and length of everything in `file`, which is left at its start again.
fn hash_from_start(mut file: File) -> io::Result<(File, u64, Digest)> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; READ_BUFFER];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        size += n as u64;
    }
    file.rewind()?;
    Ok((file, size, hasher.finalize().into()))
}

/// File bytes per chunk message: the configured size, within what a message may hold.
pub(super) fn chunk_size(config: &SessionConfig) -> usize {
    let message_room = config
        .reliable
        .max_message_size
        .saturating_sub(CHUNK_MESSAGE_OVERHEAD);
    config
        .file_chunk
        .min(MAX_CHUNK_BYTES)
        .min(message_room)
        .max(1)
}

/// The background task that sends a file's chunks after its offer; on a read error it sends
/// an abort instead. Stops when the session ends or the peer refuses the file.
pub(super) async fn send_chunks(
    prepared: Prepared,
    id: u32,
    chunk: usize,
    commands: mpsc::Sender<Command>,
) {
    let size = prepared.size;
    let mut reader =
        BufReader::with_capacity(READ_BUFFER, tokio::fs::File::from_std(prepared.file));
    let mut offset = 0u64;
    while offset < size {
        let len = (size - offset).min(chunk as u64) as usize;
        let mut data = vec![0; len];
        if let Err(error) = reader.read_exact(&mut data).await {
            let reason = match error.kind() {
                io::ErrorKind::UnexpectedEof => "the file shrank while being sent".to_owned(),
                _ => format!("the file could not be read: {error}"),
            };
            let _ = request(&commands, SessionMessage::FileAbort { id, reason }).await;
            return;
        }
        let data = Bytes::from(data);
        match request(&commands, SessionMessage::FileChunk { id, offset, data }).await {
            Ok(()) => offset += len as u64,
            Err(Rejected::TooLarge { size, limit }) => {
                let reason =
                    format!("a chunk message of {size} bytes is over the limit of {limit}");
                let _ = request(&commands, SessionMessage::FileAbort { id, reason }).await;
                return;
            }
            Err(Rejected::Ended | Rejected::Cancelled) => return,
        }
    }
    debug!(id, size, "every chunk queued");
}

/// Reports a transfer's progress at most once per percent.
#[derive(Debug)]
struct Progress {
    total: u64,
    percent: Option<u64>,
}

impl Progress {
    fn new(total: u64) -> Progress {
        Progress {
            total,
            percent: None,
        }
    }

    /// Whether `done` bytes is a new percent worth reporting.
    fn advance(&mut self, done: u64) -> bool {
        let percent = match self.total {
            0 => 100,
            total => (u128::from(done) * 100 / u128::from(total)) as u64,
        };
        if self.percent.is_some_and(|reported| reported >= percent) {
            return false;
        }
        self.percent = Some(percent);
        true
    }
}

/// A file being received.
#[derive(Debug)]
struct Incoming {
    name: String,
    size: u64,
    sha256: Digest,
    part: PartFile,
    /// Bytes that arrived and are not written yet; they go at `received - pending.len()`.
    pending: BytesMut,
    received: u64,
    progress: Progress,
}

impl Incoming {
    /// Writes the pending bytes (on the blocking pool).
    async fn flush(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch = self.pending.split().freeze();
        let offset = self.received - batch.len() as u64;
        let file = self.part.file();
        tokio::task::spawn_blocking(move || part::write_at(&file, offset, &batch))
            .await
            .map_err(io::Error::other)?
    }
}

/// A file being sent, until the peer's verdict.
#[derive(Debug)]
struct Outgoing {
    name: String,
    size: u64,
    progress: Progress,
}

/// Where in the reliable stream a chunk of ours ends, and how much of its file that makes.
#[derive(Debug)]
struct Mark {
    position: u64,
    id: u32,
    done: u64,
}

/// What the check of a received file found: the name it was saved under, or what went wrong.
#[derive(Debug)]
pub(super) struct Verdict {
    id: u32,
    name: String,
    size: u64,
    result: Result<String, String>,
}

/// Every transfer of a session, both ways.
#[derive(Debug)]
pub(super) struct Files {
    incoming: HashMap<u32, Incoming>,
    /// Received files being checked and saved.
    verifying: HashSet<u32>,
    /// Incoming transfers refused or given up: their late chunks are ignored.
    refused: VecDeque<u32>,
    outgoing: HashMap<u32, Outgoing>,
    /// Outgoing transfers settled by us (aborted): a late verdict is ignored.
    settled: VecDeque<u32>,
    marks: VecDeque<Mark>,
    verdicts: mpsc::Sender<Verdict>,
}

impl Files {
    /// No transfers yet; checks report on `verdicts`.
    pub(super) fn new(verdicts: mpsc::Sender<Verdict>) -> Files {
        Files {
            incoming: HashMap::new(),
            verifying: HashSet::new(),
            refused: VecDeque::new(),
            outgoing: HashMap::new(),
            settled: VecDeque::new(),
            marks: VecDeque::new(),
            verdicts,
        }
    }

    /// Received files still being checked.
    pub(super) fn verifying(&self) -> usize {
        self.verifying.len()
    }

    fn refuse_later_chunks(&mut self, id: u32) {
        remember(&mut self.refused, id);
    }
}

/// Adds `id` to a bounded list of recent ids.
fn remember(list: &mut VecDeque<u32>, id: u32) {
    if list.len() == REMEMBERED {
        list.pop_front();
    }
    list.push_back(id);
}

/// `text` cut to what a reason field holds.
fn bounded(mut text: String) -> String {
    if text.len() > MAX_REASON_BYTES {
        let mut end = MAX_REASON_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// Checks a received file read back from disk and saves it under a free name. Blocking.
fn verify_and_save(
    part: PartFile,
    dir: &Path,
    name: &str,
    size: u64,
    expected: Digest,
) -> Result<String, String> {
    let digest = part
        .sha256(size)
        .map_err(|error| format!("the file could not be read back: {error}"))?;
    if digest != expected {
        return Err("the file arrived damaged: its SHA-256 does not match".to_owned());
    }
    part.persist(dir, name, "")
        .map_err(|error| format!("the file could not be saved: {error}"))
}

impl Driver {
    /// The peer offers a file.
    pub(super) async fn on_file_offer(&mut self, id: u32, name: String, size: u64, sha256: Digest) {
        if self.files.incoming.contains_key(&id) || self.files.verifying.contains(&id) {
            return self.violation(format!("transfer {id} was offered twice"));
        }
        if let Some(reason) = self.refusal(size) {
            return self.refuse(id, name, reason);
        }
        let dir = self.config.download_dir.clone();
        let temp_name = name.clone();
        let created =
            tokio::task::spawn_blocking(move || PartFile::create(&dir, &temp_name, size)).await;
        let part = match created.map_err(io::Error::other).and_then(|part| part) {
            Ok(part) => part,
            Err(error) => {
                let reason = format!("the file could not be created: {error}");
                return self.refuse(id, name, reason);
            }
        };
        info!(peer = %self.peer, id, %name, size, "receiving a file");
        self.outbox.push_back(SessionEvent::FileIncoming {
            id,
            name: name.clone(),
            size,
        });
        let incoming = Incoming {
            name,
            size,
            sha256,
            part,
            pending: BytesMut::new(),
            received: 0,
            progress: Progress::new(size),
        };
        self.files.incoming.insert(id, incoming);
        if size == 0 {
            self.complete(id).await;
        }
    }

    /// Why an offer of `size` bytes is refused, if it is.
    fn refusal(&self, size: u64) -> Option<String> {
        let limit = self.config.max_file_size;
        if size > limit {
            return Some(format!(
                "the file is {size} bytes, over the limit of {limit}"
            ));
        }
        if self.files.incoming.len() + self.files.verifying.len() >= MAX_INCOMING {
            return Some(format!("already receiving {MAX_INCOMING} files"));
        }
        None
    }

    /// Refuses an offer: tells the peer and the application.
    fn refuse(&mut self, id: u32, name: String, reason: String) {
        info!(peer = %self.peer, id, %name, %reason, "refused a file");
        self.fail_incoming(id, name, reason);
    }

    /// Tells the peer and the application that an incoming transfer failed, and ignores the
    /// rest of its chunks.
    fn fail_incoming(&mut self, id: u32, name: String, reason: String) {
        let detail = bounded(reason.clone());
        self.send_control(&SessionMessage::FileResult {
            id,
            saved: false,
            detail,
        });
        self.files.refuse_later_chunks(id);
        self.outbox.push_back(SessionEvent::FileFailed {
            id,
            name,
            direction: Direction::Receiving,
            reason,
        });
    }

    /// A piece of a file from the peer.
    pub(super) async fn on_file_chunk(&mut self, id: u32, offset: u64, data: Bytes) {
        if self.files.refused.contains(&id) {
            return;
        }
        if let Err(what) = self.check_chunk(id, offset, data.len()) {
            return self.violation(what);
        }
        let Some(file) = self.files.incoming.get_mut(&id) else {
            return;
        };
        let end = offset + data.len() as u64;
        file.pending.extend_from_slice(&data);
        file.received = end;
        if file.pending.len() >= WRITE_BATCH {
            if let Err(error) = file.flush().await {
                let reason = format!("the file could not be written: {error}");
                return self.abandon_incoming(id, reason);
            }
        }
        if file.progress.advance(end) {
            self.outbox.push_back(SessionEvent::FileProgress {
                id,
                name: file.name.clone(),
                direction: Direction::Receiving,
                done: end,
                total: file.size,
            });
        }
        if end == file.size {
            self.complete(id).await;
        }
    }

    /// Whether a chunk belongs where it says: a transfer going on, right after what arrived,
    /// within the size offered.
    fn check_chunk(&self, id: u32, offset: u64, len: usize) -> Result<(), String> {
        let Some(file) = self.files.incoming.get(&id) else {
            return Err(format!("a chunk of transfer {id}, which is not going on"));
        };
        if offset != file.received {
            let expected = file.received;
            return Err(format!(
                "transfer {id}: a chunk at {offset}, expected {expected}"
            ));
        }
        if offset + len as u64 > file.size {
            let size = file.size;
            return Err(format!("transfer {id}: a chunk past its {size} bytes"));
        }
        Ok(())
    }

    /// Gives up on an incoming transfer for a local reason; its temporary file goes.
    fn abandon_incoming(&mut self, id: u32, reason: String) {
        if let Some(file) = self.files.incoming.remove(&id) {
            warn!(peer = %self.peer, id, name = %file.name, %reason, "a transfer failed");
            self.fail_incoming(id, file.name, reason);
        }
    }

    /// Every byte of a file arrived: writes what is left and checks and saves it in the
    /// background.
    async fn complete(&mut self, id: u32) {
        let Some(mut file) = self.files.incoming.remove(&id) else {
            return;
        };
        if let Err(error) = file.flush().await {
            let reason = format!("the file could not be written: {error}");
            return self.fail_incoming(id, file.name, reason);
        }
        self.files.verifying.insert(id);
        let verdicts = self.files.verdicts.clone();
        let dir = self.config.download_dir.clone();
        let Incoming {
            name,
            size,
            sha256,
            part,
            ..
        } = file;
        tokio::spawn(async move {
            let saved_name = name.clone();
            let check = move || verify_and_save(part, &dir, &saved_name, size, sha256);
            let result = tokio::task::spawn_blocking(check)
                .await
                .unwrap_or_else(|error| Err(format!("the check failed: {error}")));
            let verdict = Verdict {
                id,
                name,
                size,
                result,
            };
            let _ = verdicts.send(verdict).await;
        });
    }

    /// A received file was checked: tells the peer and the application.
    pub(super) fn on_verdict(&mut self, verdict: Verdict) {
        let Verdict {
            id,
            name,
            size,
            result,
        } = verdict;
        self.files.verifying.remove(&id);
        match result {
            Ok(saved) => {
                info!(peer = %self.peer, id, %name, %saved, size, "file saved");
                self.send_control(&SessionMessage::FileResult {
                    id,
                    saved: true,
                    detail: saved.clone(),
                });
                let path = self.config.download_dir.join(saved);
                self.outbox.push_back(SessionEvent::FileSaved {
                    id,
                    name,
                    path,
                    size,
                });
            }
            Err(reason) => {
                warn!(peer = %self.peer, id, %name, %reason, "a received file failed");
                self.fail_incoming(id, name, reason);
            }
        }
    }

    /// The peer gave up sending a file.
    pub(super) fn on_file_abort(&mut self, id: u32, reason: &str) {
        let Some(file) = self.files.incoming.remove(&id) else {
            debug!(peer = %self.peer, id, "an abort of a transfer not going on");
            return;
        };
        info!(peer = %self.peer, id, name = %file.name, %reason, "the sender gave up");
        self.files.refuse_later_chunks(id);
        self.outbox.push_back(SessionEvent::FileFailed {
            id,
            name: file.name,
            direction: Direction::Receiving,
            reason: format!("{} gave up: {reason}", self.peer),
        });
    }

    /// The peer's verdict on a file we sent.
    pub(super) fn on_file_result(&mut self, id: u32, saved: bool, detail: String) {
        let Some(file) = self.files.outgoing.remove(&id) else {
            if !self.files.settled.contains(&id) {
                self.violation(format!("a verdict on transfer {id}, which we did not send"));
            }
            return;
        };
        remember(&mut self.files.settled, id);
        let event = if saved {
            info!(peer = %self.peer, id, name = %file.name, %detail, "file delivered");
            SessionEvent::FileDelivered {
                id,
                name: file.name,
                saved_as: detail,
            }
        } else {
            info!(peer = %self.peer, id, name = %file.name, %detail, "file not saved");
            SessionEvent::FileFailed {
                id,
                name: file.name,
                direction: Direction::Sending,
                reason: format!("{} did not save it: {detail}", self.peer),
            }
        };
        self.outbox.push_back(event);
    }

    /// Whether a chunk or abort of ours belongs to a transfer still going on.
    pub(super) fn admit_file_message(&self, id: u32) -> Result<(), Rejected> {
        if self.files.outgoing.contains_key(&id) {
            Ok(())
        } else {
            Err(Rejected::Cancelled)
        }
    }

    /// Our offer was queued.
    pub(super) fn on_offer_queued(&mut self, id: u32, name: &str, size: u64) {
        let outgoing = Outgoing {
            name: name.to_owned(),
            size,
            progress: Progress::new(size),
        };
        self.files.outgoing.insert(id, outgoing);
    }

    /// A chunk of ours was queued: once `position` bytes are acknowledged, `done` bytes of the
    /// file are through.
    pub(super) fn on_chunk_queued(&mut self, id: u32, done: u64, position: u64) {
        self.files.marks.push_back(Mark { position, id, done });
    }

    /// Our abort was queued: the transfer failed.
    pub(super) fn on_abort_queued(&mut self, id: u32, reason: &str) {
        if let Some(file) = self.files.outgoing.remove(&id) {
            warn!(peer = %self.peer, id, name = %file.name, %reason, "gave up sending");
            remember(&mut self.files.settled, id);
            self.outbox.push_back(SessionEvent::FileFailed {
                id,
                name: file.name,
                direction: Direction::Sending,
                reason: reason.to_owned(),
            });
        }
    }

    /// The peer has acknowledged `acknowledged` bytes of what we queued: progress of the
    /// files they belong to.
    pub(super) fn on_acknowledged(&mut self, acknowledged: u64) {
        while let Some(mark) = self.files.marks.front() {
            if mark.position > acknowledged {
                break;
            }
            let Mark { id, done, .. } = *mark;
            self.files.marks.pop_front();
            let Some(file) = self.files.outgoing.get_mut(&id) else {
                continue;
            };
            if file.progress.advance(done) {
                self.outbox.push_back(SessionEvent::FileProgress {
                    id,
                    name: file.name.clone(),
                    direction: Direction::Sending,
                    done,
                    total: file.size,
                });
            }
        }
    }

    /// The session ended: every transfer still going on failed (received ones leave no
    /// file behind).
    pub(super) fn fail_files(&mut self, reason: &str) {
        let mut incoming: Vec<_> = self.files.incoming.drain().collect();
        incoming.sort_by_key(|(id, _)| *id);
        for (id, file) in incoming {
            drop(file.part);
            self.outbox.push_back(SessionEvent::FileFailed {
                id,
                name: file.name,
                direction: Direction::Receiving,
                reason: reason.to_owned(),
            });
        }
        let mut outgoing: Vec<_> = self.files.outgoing.drain().collect();
        outgoing.sort_by_key(|(id, _)| *id);
        for (id, file) in outgoing {
            self.outbox.push_back(SessionEvent::FileFailed {
                id,
                name: file.name,
                direction: Direction::Sending,
                reason: reason.to_owned(),
            });
        }
        self.files.marks.clear();
    }
}
