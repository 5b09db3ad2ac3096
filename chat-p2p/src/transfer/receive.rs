//! The receiver: a TCP listener and a UDP socket on the same port number; each transfer is a
//! control connection, served in a task of its own (at most [`ReceiverConfig::max_transfers`] at
//! once), and one task reads the UDP socket and hands each datagram to its transfer by id.
//!
//! Datagrams of no transfer in progress (unknown id, garbage, stragglers arriving after their
//! transfer ended) are counted and ignored. A transfer whose queue of datagrams is full (its disk
//! cannot keep up) loses the datagram, as a full socket buffer would; that is logged.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use protocol::chat_transfer::{
    Announce, Control, ControlError, DatagramCounts, Done, Limits, Refusal, RefuseReason, Report,
    Transport, decode_datagram,
};
use server_kit::{ConnectionLimit, accept_refusing, listen_on};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::time::{Instant, sleep_until, timeout};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::control::ControlStream;
use super::files::{BatchWriter, PartFile};
use super::tally::{Arrival, Tally};

/// Attempts at finding a port number free for both TCP and UDP when binding port 0.
const BIND_ATTEMPTS: usize = 16;
/// Bytes a transfer queues for the disk before writing them.
const WRITE_BATCH: usize = 1 << 20;
/// Bytes of datagrams a transfer's queue holds while its task writes to disk.
const QUEUE_BYTES: usize = 8 << 20;
/// How long a refusal may take to send.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(2);

/// What the receiver accepts and how long it waits.
#[derive(Debug, Clone)]
pub struct ReceiverConfig {
    /// Where received files are saved (must exist).
    pub out_dir: PathBuf,
    /// The largest file accepted, in bytes (default 1 GiB).
    pub max_file_size: u64,
    /// The most datagrams one UDP transfer may take (default 2^24; one bit of memory each).
    pub max_datagrams: u32,
    /// Transfers served at once; more are refused as busy (default 16).
    pub max_transfers: usize,
    /// How long to wait for straggling datagrams after "done" or the latest datagram,
    /// whichever is later (default 200 ms).
    pub grace: Duration,
    /// The longest wait for stragglers after "done", however many keep coming (default 2 s).
    pub max_grace: Duration,
    /// How long a sender may stay silent: no frame, no body byte, no datagram (default 30 s).
    pub io_timeout: Duration,
    /// At shutdown, how long transfers in progress may take to finish before they are cut off
    /// (default 5 s).
    pub shutdown_grace: Duration,
    /// The UDP socket's receive buffer to ask the kernel for, in bytes (default: leave the
    /// system's default, whose overflow is one way UDP loses datagrams).
    pub udp_recv_buffer: Option<usize>,
}

impl ReceiverConfig {
    /// The defaults, saving to `out_dir`.
    pub fn new(out_dir: impl Into<PathBuf>) -> ReceiverConfig {
        ReceiverConfig {
            out_dir: out_dir.into(),
            max_file_size: 1 << 30,
            max_datagrams: 1 << 24,
            max_transfers: 16,
            grace: Duration::from_millis(200),
            max_grace: Duration::from_secs(2),
            io_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(5),
            udp_recv_buffer: None,
        }
    }

    fn limits(&self) -> Limits {
        Limits {
            max_file_size: self.max_file_size,
            max_datagrams: self.max_datagrams,
        }
    }
}

/// One finished transfer, as the receiver's caller hears of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedFile {
    /// The sender's control connection address.
    pub peer: SocketAddr,
    /// The name the sender announced.
    pub name: String,
    /// What the sender was told.
    pub report: Report,
}

/// Why one transfer failed, and whose fault it was.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    /// The sender asked for something this receiver does not accept (it is told why).
    #[error("refused: {0}")]
    Refused(Refusal),
    /// The sender broke the protocol.
    #[error("the sender broke the protocol: {0}")]
    Protocol(String),
    /// The sender closed the connection early.
    #[error("the sender closed the connection {0}")]
    Closed(String),
    /// The sender went silent.
    #[error("the sender was silent for {after:?} {waiting_for}")]
    Timeout {
        /// How long the receiver waited.
        after: Duration,
        /// What it was waiting for.
        waiting_for: &'static str,
    },
    /// The control connection failed.
    #[error("the control connection failed: {0}")]
    Network(io::Error),
    /// The receiver could not write the file: its own fault.
    #[error("{action}: {source}")]
    Local {
        /// What the receiver was doing.
        action: String,
        /// The failure.
        source: io::Error,
    },
    /// The receiver is shutting down.
    #[error("the receiver is shutting down")]
    ShuttingDown,
}

impl ReceiveError {
    /// The refusal to tell the sender, if the connection may still carry one.
    fn refusal(&self) -> Option<Refusal> {
        let refusal = |reason, message: String| Some(Refusal::new(reason, message));
        match self {
            ReceiveError::Refused(refusal) => Some(refusal.clone()),
            ReceiveError::Protocol(problem) => refusal(RefuseReason::Protocol, problem.clone()),
            ReceiveError::Timeout { .. } => refusal(RefuseReason::Timeout, self.to_string()),
            ReceiveError::Local { .. } => refusal(RefuseReason::ReceiverFailed, self.to_string()),
            ReceiveError::ShuttingDown => refusal(RefuseReason::ShuttingDown, self.to_string()),
            ReceiveError::Closed(_) | ReceiveError::Network(_) => None,
        }
    }

    fn local(action: impl Into<String>) -> impl FnOnce(io::Error) -> ReceiveError {
        let action = action.into();
        move |source| ReceiveError::Local { action, source }
    }
}

impl From<ControlError> for ReceiveError {
    fn from(err: ControlError) -> ReceiveError {
        match err {
            ControlError::Io(err) => ReceiveError::Network(err),
            err if err.is_peer_fault() => ReceiveError::Protocol(err.to_string()),
            err => ReceiveError::Local {
                action: "sending a control frame".into(),
                source: io::Error::other(err.to_string()),
            },
        }
    }
}

/// Binds a TCP listener and a UDP socket on `addr`, the same port number for both. With port 0
/// the TCP listener takes a free port and the UDP socket the same number, trying again with
/// another port (a few times) if that number is taken for UDP.
pub async fn bind(addr: SocketAddr) -> io::Result<(TcpListener, UdpSocket)> {
    if addr.port() != 0 {
        let tcp = listen_on(addr)?;
        let udp = UdpSocket::bind(addr).await?;
        return Ok((tcp, udp));
    }
    for _ in 0..BIND_ATTEMPTS {
        let tcp = listen_on(addr)?;
        let bound = tcp.local_addr()?;
        match UdpSocket::bind(bound).await {
            Ok(udp) => return Ok((tcp, udp)),
            Err(err) if err.kind() == io::ErrorKind::AddrInUse => continue,
            Err(err) => return Err(err),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        format!(
            "no port free for both TCP and UDP on {} after {BIND_ATTEMPTS} tries",
            addr.ip()
        ),
    ))
}

/// A datagram on its way from the UDP task to its transfer.
#[derive(Debug)]
struct Datagram {
    seq: u32,
    payload: Bytes,
    at: Instant,
}

/// The queue of one UDP transfer in progress.
#[derive(Debug)]
struct Route {
    queue: mpsc::Sender<Datagram>,
    overflow: Arc<AtomicU64>,
}

/// What every task of one receiver shares.
#[derive(Debug)]
struct Shared {
    config: ReceiverConfig,
    routes: Mutex<HashMap<u64, Route>>,
    reports: mpsc::Sender<ReceivedFile>,
    stray: AtomicU64,
}

/// Serves transfers on `tcp` and `udp` (bound to the same port number, see [`bind`]), saving
/// files in `config.out_dir`, until `shutdown` completes; then stops accepting, gives the
/// transfers in progress [`ReceiverConfig::shutdown_grace`] to finish and cuts off the rest.
/// Every finished transfer goes to `reports`; if that channel is full, the report is logged
/// and dropped. At the start it deletes the temporary files (`.NAME.tmp-*`) that an interrupted
/// receiver left in the folder. Fails only if the folder is missing or the UDP buffer cannot be
/// set.
pub async fn run(
    tcp: TcpListener,
    udp: UdpSocket,
    config: ReceiverConfig,
    reports: mpsc::Sender<ReceivedFile>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    prepare_folder(&config.out_dir).await?;
    if let Some(bytes) = config.udp_recv_buffer {
        socket2::SockRef::from(&udp).set_recv_buffer_size(bytes)?;
    }
    let limit = ConnectionLimit::new(config.max_transfers);
    let shared = Arc::new(Shared {
        config,
        routes: Mutex::new(HashMap::new()),
        reports,
        stray: AtomicU64::new(0),
    });
    let stop_udp = CancellationToken::new();
    let udp_task = tokio::spawn(dispatch(udp, Arc::clone(&shared), stop_udp.clone()));
    let tracker = TaskTracker::new();
    let cut_off = CancellationToken::new();
    tokio::select! {
        () = accept(&tcp, &limit, &tracker, &shared, &cut_off) => {}
        () = shutdown => {}
    }
    drop(tcp);
    finish_transfers(&tracker, &shared.config, &cut_off).await;
    stop_udp.cancel();
    let _ = udp_task.await;
    info!(
        stray_datagrams = shared.stray.load(Ordering::Relaxed),
        "transfer receiver stopped"
    );
    Ok(())
}

/// Checks that `dir` is a folder and deletes temporary files a crash left in it.
async fn prepare_folder(dir: &Path) -> io::Result<()> {
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || {
        if !std::fs::metadata(&dir)?.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{} is not a folder", dir.display()),
            ));
        }
        let removed = server_kit::remove_leftovers(&dir)?;
        if removed > 0 {
            info!(
                removed,
                "deleted the temporary files of interrupted transfers"
            );
        }
        Ok(())
    })
    .await
    .map_err(io::Error::other)?
    .map_err(|err| io::Error::new(err.kind(), format!("output folder: {err}")))
}

/// Accepts control connections forever, refusing those over the limit as busy.
async fn accept(
    tcp: &TcpListener,
    limit: &ConnectionLimit,
    tracker: &TaskTracker,
    shared: &Arc<Shared>,
    cut_off: &CancellationToken,
) {
    let max = limit.max();
    accept_refusing(
        tcp,
        limit,
        tracker,
        |stream, peer| serve(stream, peer, Arc::clone(shared), cut_off.clone()),
        move |stream, peer| refuse_busy(stream, peer, max),
    )
    .await;
}

/// Lets transfers in progress finish within the grace period, then cuts off the rest.
async fn finish_transfers(
    tracker: &TaskTracker,
    config: &ReceiverConfig,
    cut_off: &CancellationToken,
) {
    tracker.close();
    if !tracker.is_empty() {
        info!(
            transfers = tracker.len(),
            "waiting for transfers in progress"
        );
    }
    if timeout(config.shutdown_grace, tracker.wait())
        .await
        .is_err()
    {
        cut_off.cancel();
        server_kit::drain(tracker, REFUSAL_TIMEOUT).await;
    }
}

/// Tells a sender over the limit that the receiver is busy, after reading its announce (so
/// that closing does not reset the connection under the answer).
async fn refuse_busy(stream: TcpStream, peer: SocketAddr, max: usize) {
    warn!(%peer, "refusing a transfer: {max} in progress already");
    let mut control = ControlStream::new(stream);
    let _ = timeout(REFUSAL_TIMEOUT, control.recv()).await;
    let refusal = Refusal::new(
        RefuseReason::Busy,
        format!("the receiver serves {max} transfers at once; try again later"),
    );
    let _ = timeout(REFUSAL_TIMEOUT, control.send(&Control::Refused(refusal))).await;
    control.finish().await;
}

/// Serves one control connection: the transfer, then the report or a refusal.
async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    cut_off: CancellationToken,
) {
    let mut control = ControlStream::new(stream);
    let outcome = tokio::select! {
        outcome = transfer(&mut control, &shared) => outcome,
        () = cut_off.cancelled() => Err(ReceiveError::ShuttingDown),
    };
    match outcome {
        Ok((name, report)) => {
            log_report(peer, &name, &report);
            let frame = Control::Report(report.clone());
            let sent = timeout(REFUSAL_TIMEOUT, control.send(&frame)).await;
            if !matches!(sent, Ok(Ok(()))) {
                warn!(%peer, name, "could not send the report back to the sender");
            }
            shared.publish(ReceivedFile { peer, name, report });
        }
        Err(err) => {
            warn!(%peer, "transfer failed: {err}");
            if let Some(refusal) = err.refusal() {
                let _ = timeout(REFUSAL_TIMEOUT, control.send(&Control::Refused(refusal))).await;
            }
        }
    }
    control.finish().await;
}

fn log_report(peer: SocketAddr, name: &str, report: &Report) {
    let counts = &report.datagrams;
    info!(
        %peer,
        name,
        transport = %report.transport,
        bytes = report.file_size,
        seconds = report.elapsed().as_secs_f64(),
        expected = counts.expected,
        received = counts.received,
        lost = counts.lost(),
        reordered = counts.reordered,
        duplicated = counts.duplicated,
        intact = report.intact,
        saved_as = report.saved_as,
        "transfer finished"
    );
}

/// Receives one file: announce, body or datagrams, then the file saved; the announced name
/// and the report.
async fn transfer(
    control: &mut ControlStream,
    shared: &Shared,
) -> Result<(String, Report), ReceiveError> {
    let config = &shared.config;
    let announce = recv_announce(control, config.io_timeout).await?;
    let started = Instant::now();
    announce
        .check(&config.limits())
        .map_err(ReceiveError::Refused)?;
    let part = create_part(&config.out_dir, &announce).await?;
    let data = match announce.transport {
        Transport::Tcp => receive_body(control, &announce, &part, config).await?,
        Transport::Udp => receive_datagrams(control, &announce, &part, shared).await?,
    };
    let elapsed = data.ended.duration_since(started);
    let report = save(part, &announce, data, elapsed, &config.out_dir).await?;
    Ok((announce.name, report))
}

async fn recv_announce(
    control: &mut ControlStream,
    io_timeout: Duration,
) -> Result<Announce, ReceiveError> {
    let frame =
        timeout(io_timeout, control.recv())
            .await
            .map_err(|_| ReceiveError::Timeout {
                after: io_timeout,
                waiting_for: "waiting for the announce",
            })??;
    match frame {
        Some(Control::Announce(announce)) => Ok(announce),
        Some(other) => Err(ReceiveError::Protocol(format!(
            "expected an announce, got a {} frame",
            other.name()
        ))),
        None => Err(ReceiveError::Closed("before announcing a file".into())),
    }
}

async fn create_part(dir: &Path, announce: &Announce) -> Result<PartFile, ReceiveError> {
    let (dir, name, size) = (dir.to_owned(), announce.name.clone(), announce.size);
    let action = format!("cannot create a temporary file for {name}");
    tokio::task::spawn_blocking(move || PartFile::create(&dir, &name, size))
        .await
        .map_err(io::Error::other)
        .and_then(|created| created)
        .map_err(ReceiveError::local(action))
}

/// What arrived of a file, before it is saved.
#[derive(Debug)]
struct Arrived {
    /// When the data ended (see [`Report::elapsed_micros`]).
    ended: Instant,
    bytes: u64,
    /// UDP only.
    datagrams: DatagramCounts,
}

/// Receives a TCP body of exactly `announce.size` bytes into `part`.
async fn receive_body(
    control: &mut ControlStream,
    announce: &Announce,
    part: &PartFile,
    config: &ReceiverConfig,
) -> Result<Arrived, ReceiveError> {
    control.send(&Control::Accept).await?;
    let mut writer = BatchWriter::new(part.file(), WRITE_BATCH);
    let mut received = 0;
    while received < announce.size {
        let left = usize::try_from(announce.size - received).unwrap_or(usize::MAX);
        let chunk = timeout(config.io_timeout, control.read_body(left))
            .await
            .map_err(|_| ReceiveError::Timeout {
                after: config.io_timeout,
                waiting_for: "in the middle of the file",
            })?
            .map_err(ReceiveError::Network)?;
        if chunk.is_empty() {
            return Err(ReceiveError::Closed(format!(
                "after {received} of {} bytes",
                announce.size
            )));
        }
        let len = chunk.len() as u64;
        writer
            .write(received, chunk)
            .await
            .map_err(ReceiveError::local("cannot write the file"))?;
        received += len;
    }
    let ended = Instant::now();
    writer
        .flush()
        .await
        .map_err(ReceiveError::local("cannot write the file"))?;
    Ok(Arrived {
        ended,
        bytes: received,
        datagrams: DatagramCounts::default(),
    })
}

/// Receives a UDP transfer's datagrams into `part` until "done" and the grace after it.
async fn receive_datagrams(
    control: &mut ControlStream,
    announce: &Announce,
    part: &PartFile,
    shared: &Shared,
) -> Result<Arrived, ReceiveError> {
    let capacity = (QUEUE_BYTES / usize::from(announce.datagram_payload).max(1)).clamp(64, 65_536);
    let (queue, datagrams) = mpsc::channel(capacity);
    let route = shared.open_route(announce.id, queue)?;
    control.send(&Control::Accept).await?;
    let mut receiving = Receiving {
        tally: Tally::new(announce.size, usize::from(announce.datagram_payload)),
        writer: BatchWriter::new(part.file(), WRITE_BATCH),
        done: None,
        last_arrival: None,
        last_activity: Instant::now(),
    };
    receiving.run(control, datagrams, &shared.config).await?;
    let overflow = route.overflow.load(Ordering::Relaxed);
    if overflow > 0 {
        warn!(
            name = announce.name,
            overflow, "datagrams dropped: the transfer's queue was full (disk too slow)"
        );
    }
    Ok(receiving.arrived())
}

/// The state of a UDP transfer while its datagrams arrive.
struct Receiving {
    tally: Tally,
    writer: BatchWriter,
    /// When "done" arrived and the sender's count.
    done: Option<(Instant, Done)>,
    last_arrival: Option<Instant>,
    last_activity: Instant,
}

impl Receiving {
    async fn run(
        &mut self,
        control: &mut ControlStream,
        mut datagrams: mpsc::Receiver<Datagram>,
        config: &ReceiverConfig,
    ) -> Result<(), ReceiveError> {
        loop {
            let deadline = self.deadline(config);
            if self.done.is_some() && (self.tally.is_complete() || Instant::now() >= deadline) {
                // Checked here too, not only by the timer: a stream of datagrams that never
                // pauses would otherwise keep the transfer open past `max_grace`.
                break;
            }
            tokio::select! {
                biased;
                Some(datagram) = datagrams.recv() => self.take(datagram).await?,
                frame = control.recv(), if self.done.is_none() => self.on_frame(frame?)?,
                () = sleep_until(deadline) => {
                    if self.done.is_some() {
                        break;
                    }
                    return Err(ReceiveError::Timeout {
                        after: config.io_timeout,
                        waiting_for: "waiting for datagrams or \"done\"",
                    });
                }
            }
        }
        self.writer
            .flush()
            .await
            .map_err(ReceiveError::local("cannot write the file"))
    }

    /// Before "done": the sender's silence limit; after: the grace for stragglers.
    fn deadline(&self, config: &ReceiverConfig) -> Instant {
        match self.done {
            None => self.last_activity + config.io_timeout,
            Some((done_at, _)) => {
                let latest = self.last_arrival.map_or(done_at, |at| at.max(done_at));
                (latest + config.grace).min(done_at + config.max_grace)
            }
        }
    }

    async fn take(&mut self, datagram: Datagram) -> Result<(), ReceiveError> {
        self.last_arrival = Some(datagram.at);
        self.last_activity = datagram.at;
        if let Arrival::Fresh { offset } = self.tally.record(datagram.seq, datagram.payload.len()) {
            self.writer
                .write(offset, datagram.payload)
                .await
                .map_err(ReceiveError::local("cannot write the file"))?;
        }
        Ok(())
    }

    fn on_frame(&mut self, frame: Option<Control>) -> Result<(), ReceiveError> {
        match frame {
            Some(Control::Done(done)) => {
                self.done = Some((Instant::now(), done));
                Ok(())
            }
            Some(other) => Err(ReceiveError::Protocol(format!(
                "expected \"done\", got a {} frame",
                other.name()
            ))),
            None => Err(ReceiveError::Closed("before saying \"done\"".into())),
        }
    }

    fn arrived(&self) -> Arrived {
        let done_at = self.done.map_or_else(Instant::now, |(at, _)| at);
        let sent = self.done.map_or(0, |(_, done)| done.datagrams_sent);
        Arrived {
            ended: self.last_arrival.map_or(done_at, |at| at.max(done_at)),
            bytes: self.tally.bytes_received(),
            datagrams: self.tally.counts(sent),
        }
    }
}

/// Hashes what was written, saves it under the name its state earns, and makes the report.
async fn save(
    part: PartFile,
    announce: &Announce,
    arrived: Arrived,
    elapsed: Duration,
    dir: &Path,
) -> Result<Report, ReceiveError> {
    let (dir, name, size, expected) = (
        dir.to_owned(),
        announce.name.clone(),
        announce.size,
        announce.sha256,
    );
    let complete = arrived.bytes == size;
    let saved = tokio::task::spawn_blocking(move || {
        let sha256 = part.sha256(size)?;
        let suffix = match (complete, sha256 == expected) {
            (true, true) => "",
            (false, _) => ".incomplete",
            (true, false) => ".damaged",
        };
        let saved_as = part.persist(&dir, &name, suffix)?;
        Ok::<_, io::Error>((sha256, saved_as))
    })
    .await
    .map_err(io::Error::other)
    .and_then(|saved| saved)
    .map_err(ReceiveError::local("cannot save the file"))?;
    let (sha256, saved_as) = saved;
    Ok(Report {
        transport: announce.transport,
        intact: sha256 == announce.sha256,
        elapsed_micros: u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
        file_size: announce.size,
        bytes_received: arrived.bytes,
        datagrams: arrived.datagrams,
        sha256,
        saved_as,
    })
}

/// Reads the UDP socket until `stop`, handing each datagram to its transfer.
async fn dispatch(udp: UdpSocket, shared: Arc<Shared>, stop: CancellationToken) {
    let mut buf = vec![0; 65_536];
    loop {
        let received = tokio::select! {
            () = stop.cancelled() => return,
            received = udp.recv_from(&mut buf) => received,
        };
        match received {
            Ok((len, from)) => shared.route(&buf[..len], from),
            Err(err) => {
                // Windows reports an ICMP "port unreachable" this way; nothing to do about it.
                debug!("UDP receive failed: {err}");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
}

/// Removes a transfer's route when it ends, however it ends.
struct RouteGuard<'a> {
    shared: &'a Shared,
    id: u64,
    overflow: Arc<AtomicU64>,
}

impl Drop for RouteGuard<'_> {
    fn drop(&mut self) {
        self.shared.routes().remove(&self.id);
    }
}

impl Shared {
    fn routes(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Route>> {
        self.routes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers transfer `id`'s queue; refused if another transfer uses the id.
    fn open_route(
        &self,
        id: u64,
        queue: mpsc::Sender<Datagram>,
    ) -> Result<RouteGuard<'_>, ReceiveError> {
        let overflow = Arc::new(AtomicU64::new(0));
        match self.routes().entry(id) {
            Entry::Occupied(_) => {
                return Err(ReceiveError::Refused(Refusal::new(
                    RefuseReason::DuplicateId,
                    format!("transfer id {id:016x} is in use; pick another"),
                )));
            }
            Entry::Vacant(slot) => {
                slot.insert(Route {
                    queue,
                    overflow: Arc::clone(&overflow),
                });
            }
        }
        Ok(RouteGuard {
            shared: self,
            id,
            overflow,
        })
    }

    /// Hands one datagram to its transfer, or counts it as stray.
    fn route(&self, datagram: &[u8], from: SocketAddr) {
        let (header, payload) = match decode_datagram(datagram) {
            Ok(decoded) => decoded,
            Err(err) => return self.stray(from, &err.to_string()),
        };
        let routes = self.routes();
        let Some(route) = routes.get(&header.id) else {
            drop(routes);
            return self.stray(from, "no transfer in progress has its id");
        };
        let datagram = Datagram {
            seq: header.seq,
            payload: Bytes::copy_from_slice(payload),
            at: Instant::now(),
        };
        match route.queue.try_send(datagram) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                route.overflow.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Closed(_)) => {
                drop(routes);
                self.stray(from, "its transfer is ending");
            }
        }
    }

    fn stray(&self, from: SocketAddr, why: &str) {
        let stray = self.stray.fetch_add(1, Ordering::Relaxed) + 1;
        debug!(%from, stray, "ignored a datagram: {why}");
    }

    /// Gives a finished transfer to the caller, or logs that the caller is not keeping up.
    fn publish(&self, received: ReceivedFile) {
        match self.reports.try_send(received) {
            Ok(()) => {}
            Err(TrySendError::Full(received)) => {
                warn!(
                    name = received.name,
                    "the report consumer is slow; report dropped"
                );
            }
            Err(TrySendError::Closed(_)) => {}
        }
    }
}
