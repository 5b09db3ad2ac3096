//! `cli bench chat`: the chat room's fan-out, with 100 clients talking at once by default.
//!
//! Every client joins the room as `bench-<n>` and both sends and receives, speaking the room's
//! protocol with the frames of [`protocol::chat`] and reading into a 64 KiB buffer. (The room's
//! client library, `chat_p2p::room::RoomReader`, reserves no room before it reads, so its reads
//! take a few dozen bytes: about three `recv` calls per message received, which made a benchmark
//! on it measure its own reading, at a sixth of the rate, rather than the room.)
//!
//! The closed loop is per sender: a client keeps at most `--pipeline` messages of its own
//! undelivered, where a message is delivered once every other client has received it. Each
//! sender holds a semaphore of `pipeline × (clients − 1)` permits; sending a message takes
//! `clients − 1` of them, and every client that receives it gives one back. So the room is kept
//! busy by every client at once, and a slow room or a slow reader slows the senders down instead
//! of letting messages pile up.
//!
//! A message's text is its sequence number and the time it was sent (microseconds since the
//! benchmark started, on the clock of this process, which both ends share). A receiver checks
//! that each sender's messages arrive in order, each exactly once, and records the delivery's
//! latency (sent to received) in its HdrHistogram. At the end of a round the senders stop and
//! the round waits for the deliveries still due; any missing after [`DRAIN_TIMEOUT`] are
//! errors. The rate reported is deliveries (one message to one client) per second, from the
//! round's start to its last delivery; messages sent per second are noted under the table.
//!
//! Before the first round the clients join one after the other, each saying `hello`: once the
//! first client has heard every other one's hello, everyone is in the room. The room takes each
//! connection in a task of its own, so the first client may be registered only after a later
//! one's hello went out to the others; a hello not heard is said again until it is.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use bytes::{Buf, Bytes, BytesMut};
use chat_p2p::room::{self, RoomConfig};
use clap::Args;
use protocol::chat::{ChatError, ChatFrame, DEFAULT_MAX_PAYLOAD, HEADER_LEN, parse_header};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout_at};

use super::load::{
    CONNECT_TIMEOUT, InProcessServer, LoadArgs, Plan, Report, Round, Series, Tally, Verdict,
    progress,
};

/// Clients unless `--connections` says otherwise.
const DEFAULT_CLIENTS: &str = "100";
/// How long the deliveries still due at the end of a round may take.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long every client may take to join the room.
const JOIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the end of a round, or the joining, is checked on.
const POLL: Duration = Duration::from_millis(1);
/// How long a client waits for the first client to hear its hello before saying it again.
const HELLO_AGAIN: Duration = Duration::from_millis(200);
/// The text a client says on joining.
const HELLO: &[u8] = b"hello";
/// What a client's reader asks the socket for at once.
const READ_BUFFER: usize = 64 * 1024;

/// Arguments of `cli bench chat`: clients (`--connections`) are 100 by default.
#[derive(Debug, Args)]
#[command(mut_arg("connections", |arg| arg.default_value(DEFAULT_CLIENTS)))]
pub struct ChatBenchArgs {
    #[command(flatten)]
    load: LoadArgs,
    /// Messages of its own each client keeps undelivered at most (a message is delivered once
    /// every other client has it).
    #[arg(long, value_name = "P", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pipeline: u32,
}

/// What every task of the benchmark shares.
struct Shared {
    clients: usize,
    /// Each sender's window: `full` permits when nothing of its own is undelivered.
    windows: Vec<Semaphore>,
    full: usize,
    /// The zero of the times written in messages.
    epoch: Instant,
    inboxes: Vec<Mutex<Inbox>>,
    /// Whose hellos the first client has heard.
    heard: Vec<AtomicBool>,
}

/// What one client received since the last harvest.
struct Inbox {
    tally: Tally,
    last: Option<Instant>,
    /// The sequence number each sender's next message must carry.
    next: Vec<u64>,
}

impl Shared {
    fn new(clients: usize, window: usize) -> Shared {
        let full = window * (clients - 1);
        let inbox = || {
            Mutex::new(Inbox {
                tally: Tally::new(),
                last: None,
                next: vec![1; clients],
            })
        };
        Shared {
            clients,
            windows: (0..clients).map(|_| Semaphore::new(full)).collect(),
            full,
            epoch: Instant::now(),
            inboxes: (0..clients).map(|_| inbox()).collect(),
            heard: (0..clients).map(|_| AtomicBool::new(false)).collect(),
        }
    }

    /// How many clients' hellos the first client has heard.
    fn hellos(&self) -> usize {
        let heard = |flag: &&AtomicBool| flag.load(Ordering::Relaxed);
        self.heard.iter().filter(heard).count()
    }

    fn inbox(&self, client: usize) -> std::sync::MutexGuard<'_, Inbox> {
        self.inboxes[client]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Deliveries still due: permits missing from the windows.
    fn undelivered(&self) -> usize {
        let full = self.full;
        self.windows
            .iter()
            .map(|window| full.saturating_sub(window.available_permits()))
            .sum()
    }

    /// Gives back the permits of deliveries that never came, so the next round starts whole.
    fn refill(&self) {
        for window in &self.windows {
            window.add_permits(self.full.saturating_sub(window.available_permits()));
        }
    }

    /// Everything received since the last harvest, and when the last of it came.
    fn harvest(&self) -> (Tally, Option<Instant>) {
        let mut total = Tally::new();
        let mut last: Option<Instant> = None;
        for client in 0..self.clients {
            let mut inbox = self.inbox(client);
            total.merge(&std::mem::take(&mut inbox.tally));
            last = last.max(inbox.last.take());
        }
        (total, last)
    }

    /// Takes one received message, `text` from `user`, into `me`'s inbox.
    fn receive(&self, me: usize, user: &[u8], text: &[u8]) {
        let Some(sender) = user
            .strip_prefix(b"bench-")
            .and_then(number)
            .and_then(|n| usize::try_from(n).ok())
            .filter(|&n| n < self.clients)
        else {
            return; // not one of ours (a room that announces joins, say)
        };
        if text == HELLO {
            if me == 0 {
                self.heard[sender].store(true, Ordering::Relaxed);
            }
            return;
        }
        let now = Instant::now();
        let mut inbox = self.inbox(me);
        match self.check(&mut inbox, me, sender, text, now) {
            Ok(latency) => inbox.tally.answered(Verdict::Right, latency),
            Err(why) => inbox.tally.failed(1, why),
        }
        inbox.last = Some(now);
        drop(inbox);
        self.windows[sender].add_permits(1);
    }

    /// The latency of `sender`'s message `text` arriving at `me` at `now`, if it is the one
    /// expected next.
    fn check(
        &self,
        inbox: &mut Inbox,
        me: usize,
        sender: usize,
        text: &[u8],
        now: Instant,
    ) -> Result<Duration, String> {
        let mut fields = text.splitn(2, |&byte| byte == b' ');
        let (Some(sequence), Some(sent)) = (
            fields.next().and_then(number),
            fields.next().and_then(number),
        ) else {
            return Err(format!(
                "bench-{me} got \"{}\" from bench-{sender}",
                text.escape_ascii()
            ));
        };
        let expected = inbox.next[sender];
        inbox.next[sender] = sequence + 1;
        if sequence != expected {
            return Err(format!(
                "bench-{me} got message {sequence} of bench-{sender} where {expected} was due"
            ));
        }
        let sent = self.epoch + Duration::from_micros(sent);
        Ok(now.saturating_duration_since(sent))
    }
}

/// The decimal number `digits` spells, if it does.
fn number(digits: &[u8]) -> Option<u64> {
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Runs the benchmark and prints its table; exit status 1 if any delivery failed.
pub fn run(args: ChatBenchArgs) -> anyhow::Result<ExitCode> {
    let plan = args.load.plan()?;
    ensure!(
        plan.connections >= 2,
        "a chat room needs at least 2 clients to fan out"
    );
    let target = plan.target(start_server)?;
    println!(
        "chat room: {} clients each sending with at most {} message(s) of its own undelivered; \
         every message goes to the {} others; {}",
        plan.connections,
        args.pipeline,
        plan.connections - 1,
        plan.describe(&target, None)
    );
    let shared = Arc::new(Shared::new(plan.connections, args.pipeline as usize));
    let (series, sent) =
        plan.load_runtime()?
            .block_on(measure_room(&plan, &shared, target.addr()))?;
    target.stop()?;
    let mut report = Report::new("clients", "deliveries/s");
    let window = args.pipeline.to_string();
    report.add(&series, plan.connections, &window, None);
    report.note(format!(
        "messages sent: {sent:.0}/s, each delivered to {} clients",
        plan.connections - 1
    ));
    Ok(report.print())
}

/// The room on its defaults, in-process.
fn start_server() -> anyhow::Result<InProcessServer> {
    InProcessServer::tcp("chat room", |listener, shutdown| {
        room::run(listener, RoomConfig::default(), shutdown)
    })
}

/// Joins every client, runs the warm-up and the rounds; the deliveries and the messages sent
/// per second.
async fn measure_room(
    plan: &Plan,
    shared: &Arc<Shared>,
    addr: std::net::SocketAddr,
) -> anyhow::Result<(Series, f64)> {
    let (mut talkers, readers) = join_all(shared, addr).await?;
    let mut series = Series::new("chat room fan-out");
    let (mut sent, mut elapsed) = (0, Duration::ZERO);
    if !plan.warmup.is_zero() {
        talkers = round(shared, talkers, plan.warmup).await?.2;
    }
    for n in 0..plan.rounds {
        let (measured, messages, returned) = round(shared, talkers, plan.duration).await?;
        talkers = returned;
        sent += messages;
        elapsed += measured.elapsed;
        series.push(&measured);
        let window = shared.full / (shared.clients - 1);
        progress(n, plan.rounds, window, &[&measured], &[&series.label]);
    }
    for reader in readers {
        reader.abort();
    }
    Ok((series, sent as f64 / elapsed.as_secs_f64().max(1e-9)))
}

/// Joins the clients one by one, each saying hello, and waits until the first has heard every
/// other: the talkers, and the reader tasks.
async fn join_all(
    shared: &Arc<Shared>,
    addr: std::net::SocketAddr,
) -> anyhow::Result<(Vec<Talker>, Vec<JoinHandle<()>>)> {
    let mut talkers = Vec::with_capacity(shared.clients);
    let mut readers = Vec::with_capacity(shared.clients);
    for client in 0..shared.clients {
        let name = format!("bench-{client}");
        let stream = server_kit::connect(addr, CONNECT_TIMEOUT)
            .await
            .with_context(|| format!("{name} cannot reach the room at {addr}"))?;
        let (read, mut write) = stream.into_split();
        send(&mut write, name.as_bytes()).await?;
        readers.push(tokio::spawn(listen(Arc::clone(shared), client, read)));
        send(&mut write, HELLO).await?;
        talkers.push(Talker { write, next: 1 });
    }
    let limit = Instant::now() + JOIN_TIMEOUT;
    let mut again = Instant::now() + HELLO_AGAIN;
    while shared.hellos() < shared.clients - 1 {
        let now = Instant::now();
        if now > limit {
            bail!(
                "bench-0 heard {} of {} hellos within {JOIN_TIMEOUT:?}",
                shared.hellos(),
                shared.clients - 1
            );
        }
        if now >= again {
            say_hello_again(shared, &mut talkers).await?;
            again = now + HELLO_AGAIN;
        }
        sleep(POLL).await;
    }
    Ok((talkers, readers))
}

/// Every client but the first whose hello the first has not heard says it again.
async fn say_hello_again(shared: &Shared, talkers: &mut [Talker]) -> anyhow::Result<()> {
    for (client, talker) in talkers.iter_mut().enumerate().skip(1) {
        if !shared.heard[client].load(Ordering::Relaxed) {
            send(&mut talker.write, HELLO).await?;
        }
    }
    Ok(())
}

/// Writes `payload` as one frame.
async fn send(write: &mut OwnedWriteHalf, payload: &[u8]) -> anyhow::Result<()> {
    let frame = ChatFrame::new(payload)?;
    write.write_all(frame.as_bytes()).await?;
    Ok(())
}

/// Client `me`'s receiving side, until the connection ends (an error: the room never closes
/// a client during the benchmark). The room relays each message as two frames, the sender's
/// name and the text.
async fn listen(shared: Arc<Shared>, me: usize, mut read: OwnedReadHalf) {
    let mut buffer = BytesMut::with_capacity(READ_BUFFER);
    let mut user: Option<Bytes> = None;
    let why = loop {
        buffer.reserve(READ_BUFFER / 2);
        match read.read_buf(&mut buffer).await {
            Ok(0) => break "the room closed the connection".to_string(),
            Err(err) => break err.to_string(),
            Ok(_) => {}
        }
        let taken = take_frames(&mut buffer, |frame| match user.take() {
            None => user = Some(frame),
            Some(sender) => shared.receive(me, &sender, &frame),
        });
        if let Err(err) = taken {
            break err.to_string();
        }
    };
    shared
        .inbox(me)
        .tally
        .failed(1, format!("bench-{me}: {why}"));
}

/// Hands every whole frame at the front of `buffer` (its payload) to `frame`.
fn take_frames(buffer: &mut BytesMut, mut frame: impl FnMut(Bytes)) -> Result<(), ChatError> {
    while let Some(header) = buffer.first_chunk::<HEADER_LEN>() {
        let len = parse_header(header, DEFAULT_MAX_PAYLOAD)?;
        if buffer.len() < HEADER_LEN + len {
            break;
        }
        buffer.advance(HEADER_LEN);
        frame(buffer.split_to(len).freeze());
    }
    Ok(())
}

/// One round: every client sends for `duration`, then the deliveries due arrive. The round,
/// the messages sent and the talkers back.
async fn round(
    shared: &Arc<Shared>,
    talkers: Vec<Talker>,
    duration: Duration,
) -> anyhow::Result<(Round, u64, Vec<Talker>)> {
    shared.harvest();
    let start = Instant::now();
    let deadline = start + duration;
    let senders: Vec<_> = talkers
        .into_iter()
        .enumerate()
        .map(|(me, talker)| tokio::spawn(talk(Arc::clone(shared), me, talker, deadline)))
        .collect();
    let mut talkers = Vec::with_capacity(senders.len());
    let mut sent = 0;
    for sender in senders {
        let (talker, messages) = sender.await.context("a chat sender")??;
        talkers.push(talker);
        sent += messages;
    }
    let undelivered = drain(shared).await;
    let (mut tally, last) = shared.harvest();
    if undelivered > 0 {
        tally.failed(
            undelivered as u64,
            format!("{undelivered} deliveries still missing {DRAIN_TIMEOUT:?} after the round"),
        );
        shared.refill();
    }
    let end = last.unwrap_or(deadline).max(deadline);
    let round = Round {
        tally,
        elapsed: end - start,
    };
    Ok((round, sent, talkers))
}

/// Waits up to [`DRAIN_TIMEOUT`] for the deliveries still due; how many never came.
async fn drain(shared: &Shared) -> usize {
    let limit = Instant::now() + DRAIN_TIMEOUT;
    loop {
        let undelivered = shared.undelivered();
        if undelivered == 0 || Instant::now() > limit {
            return undelivered;
        }
        sleep(POLL).await;
    }
}

/// A client's sending side, kept from round to round.
struct Talker {
    write: OwnedWriteHalf,
    /// The sequence number of its next message.
    next: u64,
}

/// Client `me`'s sending side until `deadline`: a message whenever its window has room. The
/// talker back, and the messages sent.
async fn talk(
    shared: Arc<Shared>,
    me: usize,
    mut talker: Talker,
    deadline: Instant,
) -> anyhow::Result<(Talker, u64)> {
    let fan_out = u32::try_from(shared.clients - 1)?;
    let mut sent = 0;
    while Instant::now() < deadline {
        let room = timeout_at(deadline.into(), shared.windows[me].acquire_many(fan_out)).await;
        let Ok(permits) = room else { break };
        permits.context("a window closed")?.forget();
        let micros = shared.epoch.elapsed().as_micros();
        let text = format!("{} {micros}", talker.next);
        send(&mut talker.write, text.as_bytes())
            .await
            .with_context(|| format!("bench-{me} cannot send"))?;
        talker.next += 1;
        sent += 1;
    }
    Ok((talker, sent))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliveries_give_back_permits_and_must_come_in_order() {
        let shared = Shared::new(3, 1);
        shared.windows[1].try_acquire_many(2).unwrap().forget();
        assert_eq!(shared.undelivered(), 2);
        shared.receive(0, b"bench-1", b"1 0");
        assert_eq!(shared.undelivered(), 1);
        shared.receive(2, b"bench-1", b"1 0");
        assert_eq!(shared.undelivered(), 0);
        let (tally, last) = shared.harvest();
        assert_eq!((tally.completed, tally.errors), (2, 0));
        assert!(last.is_some());

        shared.receive(0, b"bench-1", b"3 0"); // 2 skipped
        shared.receive(0, b"server", b"bench-9 joined");
        shared.receive(0, b"bench-2", HELLO);
        shared.receive(0, b"bench-2", HELLO);
        shared.receive(1, b"bench-0", HELLO);
        let (tally, _) = shared.harvest();
        assert_eq!((tally.completed, tally.errors), (0, 1));
        let why = tally.first_error.unwrap();
        assert_eq!(why, "bench-0 got message 3 of bench-1 where 2 was due");
        assert_eq!(
            shared.hellos(),
            1,
            "a hello said again counts once, and only the first client's count"
        );
    }

    #[test]
    fn a_refill_makes_up_for_lost_deliveries() {
        let shared = Shared::new(4, 2);
        shared.windows[3].try_acquire_many(3).unwrap().forget();
        assert_eq!(shared.undelivered(), 3);
        shared.refill();
        assert_eq!(shared.undelivered(), 0);
        assert_eq!(shared.windows[3].available_permits(), 6);
    }

    #[test]
    fn frames_are_taken_whole_and_bad_headers_refused() {
        let mut buffer = BytesMut::new();
        for payload in [&b"bench-3"[..], b"7 12"] {
            buffer.extend_from_slice(ChatFrame::new(payload).unwrap().as_bytes());
        }
        buffer.extend_from_slice(b"5         hel");
        let mut frames = Vec::new();
        take_frames(&mut buffer, |frame| frames.push(frame)).unwrap();
        assert_eq!(frames, [&b"bench-3"[..], b"7 12"]);
        assert_eq!(&buffer[..], b"5         hel", "a partial frame waits");
        let mut bad = BytesMut::from(&b"five      hello"[..]);
        assert!(take_frames(&mut bad, |_| {}).is_err());
    }
}
