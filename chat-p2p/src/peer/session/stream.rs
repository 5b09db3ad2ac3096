//! The media stream inside a session. Sending: a background task reads the file a chunk at a
//! time and hands each chunk, behind its [`ChunkHeader`], to the driver at the stream's
//! real-time rate (one chunk per `chunk / rate` seconds, `sleep_until` from the stream's
//! start), which seals it as a stream datagram and sends it once; the end and the chunk count
//! go over the reliable channel. Receiving: chunks are tallied ([`StreamTally`], arrival
//! times from the stream's start as this end saw it) and dropped, as a player would after
//! playing them; a grace after the end, the report goes back to the sender.
//!
//! The start travels over the reliable channel, so it can wait there behind a file's chunks
//! while the stream's first datagrams, which do not, arrive before it. Chunks of a stream not
//! yet started are therefore held (up to [`MAX_EARLY_CHUNKS`], their arrival times kept) and
//! tallied when the start arrives, its clock then starting at the first of them.

use std::collections::HashMap;
use std::time::Duration;

use protocol::p2p::session::SessionMessage;
use protocol::p2p::stream::{CHUNK_HEADER_LEN, ChunkHeader, StreamReport, StreamTally};
use tokio::io::{AsyncRead, AsyncReadExt, BufReader};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};
use tracing::{debug, info, trace, warn};

use super::driver::{Command, Driver};
use super::{SessionEvent, request};

/// Streams received at once; one more is a protocol violation.
const MAX_INCOMING_STREAMS: usize = 8;
/// The buffer a streamed file is read through.
const READ_BUFFER: usize = 64 * 1024;
/// Chunks held at most, over all streams, while their stream's start is on its way.
const MAX_EARLY_CHUNKS: usize = 1024;

/// How a stream is cut and paced.
#[derive(Debug, Clone, Copy)]
pub(super) struct Pacing {
    /// The stream's number.
    pub(super) id: u32,
    /// Payload bytes per chunk.
    pub(super) chunk: usize,
    /// Bytes per second.
    pub(super) rate: u32,
    /// Chunks the file takes.
    pub(super) chunks: u32,
}

impl Pacing {
    /// The time between two chunks.
    fn interval(&self) -> Duration {
        let nanos = self.chunk as u128 * 1_000_000_000 / u128::from(self.rate.max(1));
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

/// The background task that sends a stream's chunks at its rate, then its end. Stops early
/// when the session ends; a file that shrinks or fails to read ends the stream early.
pub(super) async fn send_chunks(
    file: tokio::fs::File,
    pacing: Pacing,
    chunks: mpsc::Sender<Vec<u8>>,
    commands: mpsc::Sender<Command>,
) {
    let interval = pacing.interval();
    let origin = Instant::now();
    let mut reader = BufReader::with_capacity(READ_BUFFER, file);
    let mut data = vec![0; pacing.chunk];
    let mut sent = 0u32;
    while sent < pacing.chunks {
        let len = match read_up_to(&mut reader, &mut data).await {
            Ok(0) => break,
            Ok(len) => len,
            Err(error) => {
                warn!(id = pacing.id, %error, "the streamed file could not be read");
                break;
            }
        };
        sleep_until(origin + interval * sent).await;
        let header = ChunkHeader {
            stream_id: pacing.id,
            seq: sent,
            sent_at_us: micros(origin.elapsed()),
        };
        let mut datagram = Vec::with_capacity(CHUNK_HEADER_LEN + len);
        header.encode(&mut datagram);
        datagram.extend_from_slice(&data[..len]);
        if chunks.send(datagram).await.is_err() {
            return;
        }
        sent += 1;
    }
    debug!(id = pacing.id, sent, "stream sent");
    let _ = request(
        &commands,
        SessionMessage::StreamEnd {
            id: pacing.id,
            sent,
        },
    )
    .await;
}

/// Fills `buffer` from `reader` as far as the file goes; the bytes read.
async fn read_up_to<R: AsyncRead + Unpin>(
    reader: &mut R,
    buffer: &mut [u8],
) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        let n = reader.read(&mut buffer[filled..]).await?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

/// A duration in whole microseconds, saturating.
fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// A stream being received.
#[derive(Debug)]
struct Incoming {
    name: String,
    tally: StreamTally,
    /// When its start arrived: arrival times count from here.
    origin: Instant,
    /// Once its end arrived: when to report, and the chunks sent.
    end: Option<(Instant, u32)>,
}

/// A chunk that arrived before its stream's start.
#[derive(Debug)]
struct EarlyChunk {
    header: ChunkHeader,
    payload_len: usize,
    arrived: Instant,
}

/// Every stream of a session, both ways.
#[derive(Debug, Default)]
pub(super) struct Streams {
    incoming: HashMap<u32, Incoming>,
    /// Chunks of streams whose start has not arrived yet, in arrival order.
    early: Vec<EarlyChunk>,
    /// Streams we send, by number, with their names, until the peer's report.
    outgoing: HashMap<u32, String>,
}

impl Streams {
    /// Our stream's start was queued.
    pub(super) fn on_start_queued(&mut self, id: u32, name: String) {
        self.outgoing.insert(id, name);
    }
}

impl Driver {
    /// The peer starts a stream.
    pub(super) fn on_stream_start(&mut self, id: u32, name: String, rate: u32) {
        if self.streams.incoming.contains_key(&id) {
            return self.violation(format!("stream {id} started twice"));
        }
        if self.streams.incoming.len() >= MAX_INCOMING_STREAMS {
            return self.violation(format!("more than {MAX_INCOMING_STREAMS} streams at once"));
        }
        info!(peer = %self.peer, id, %name, rate, "receiving a stream");
        let (early, later): (Vec<EarlyChunk>, Vec<EarlyChunk>) =
            std::mem::take(&mut self.streams.early)
                .into_iter()
                .partition(|chunk| chunk.header.stream_id == id);
        self.streams.early = later;
        let origin = early
            .first()
            .map_or_else(Instant::now, |chunk| chunk.arrived);
        let mut tally = StreamTally::new(id);
        for chunk in &early {
            let arrived = micros(chunk.arrived - origin);
            tally.on_chunk(&chunk.header, chunk.payload_len, arrived);
        }
        let incoming = Incoming {
            name: name.clone(),
            tally,
            origin,
            end: None,
        };
        self.streams.incoming.insert(id, incoming);
        self.outbox
            .push_back(SessionEvent::StreamIncoming { id, name, rate });
    }

    /// A stream datagram (in `self.opened`): tallied, its payload dropped.
    pub(super) fn on_stream_datagram(&mut self) {
        let Ok((header, payload)) = ChunkHeader::decode(&self.opened) else {
            debug!(peer = %self.peer, "a stream datagram shorter than its header");
            return;
        };
        let Some(stream) = self.streams.incoming.get_mut(&header.stream_id) else {
            return self.hold_early(header, payload.len());
        };
        let arrived = micros(stream.origin.elapsed());
        stream.tally.on_chunk(&header, payload.len(), arrived);
    }

    /// Keeps a chunk of a stream whose start has not arrived, while there is room.
    fn hold_early(&mut self, header: ChunkHeader, payload_len: usize) {
        if self.streams.early.len() >= MAX_EARLY_CHUNKS {
            trace!(peer = %self.peer, id = header.stream_id, "a chunk of no stream going on");
            return;
        }
        self.streams.early.push(EarlyChunk {
            header,
            payload_len,
            arrived: Instant::now(),
        });
    }

    /// The peer's stream ended after `sent` chunks: the report follows after the grace.
    pub(super) fn on_stream_end(&mut self, id: u32, sent: u32) {
        let grace = self.config.stream_grace;
        match self.streams.incoming.get_mut(&id) {
            Some(stream) if stream.end.is_none() => {
                stream.end = Some((Instant::now() + grace, sent))
            }
            _ => self.violation(format!("an end of stream {id}, which is not going on")),
        }
    }

    /// When the next stream report is due.
    pub(super) fn next_stream_report(&self) -> Option<Instant> {
        let ends = self
            .streams
            .incoming
            .values()
            .filter_map(|stream| stream.end);
        ends.map(|(at, _)| at).min()
    }

    /// Reports every stream whose grace has passed, to the peer and the application.
    pub(super) fn report_due_streams(&mut self, now: Instant) {
        let due: Vec<u32> = self
            .streams
            .incoming
            .iter()
            .filter(|(_, stream)| stream.end.is_some_and(|(at, _)| now >= at))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let Some(stream) = self.streams.incoming.remove(&id) else {
                continue;
            };
            let sent = stream.end.map_or(0, |(_, sent)| sent);
            let report = stream.tally.report(sent);
            info!(peer = %self.peer, id, name = %stream.name, ?report, "stream received");
            self.send_control(&SessionMessage::StreamReport { id, report });
            self.outbox.push_back(SessionEvent::StreamReceived {
                id,
                name: stream.name,
                report,
            });
        }
    }

    /// The peer's report on a stream we sent.
    pub(super) fn on_stream_report(&mut self, id: u32, report: StreamReport) {
        let Some(name) = self.streams.outgoing.remove(&id) else {
            return self.violation(format!("a report on stream {id}, which we did not send"));
        };
        info!(peer = %self.peer, id, %name, ?report, "stream reported");
        self.outbox
            .push_back(SessionEvent::StreamSent { id, name, report });
    }
}
