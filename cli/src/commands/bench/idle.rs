//! `cli bench idle chat|addressbook`: many idle connections held on one server at once.
//!
//! The server runs as a child process of this binary (`cli chat serve` or `cli addressbook
//! serve` on port 0, given the limit), because one process cannot hold both ends of ten thousand
//! connections under a usual open-file limit; `--server` loads a running server instead. Both
//! processes lift their soft open-file limit to the hard one first, and the benchmark says so
//! plainly when even that is too low.
//!
//! It opens N connections (a chat client sends its username; an address-book client just
//! connects), then proves that each one the server kept is really served: in the chat room the
//! first client says one message (repeated until everyone had it, since the server may still be
//! taking names) and every other client must receive it; on the address book every connection
//! asks one query and must get an answer. Those the server turned away must have been told why
//! (the room is full; the server is busy). When the server is then full, one more connection must
//! be refused the same clean way. The server's resident memory (VmRSS) is read before the
//! connections and with all of them open, for the KiB each idle connection costs.

use std::fs;
use std::io::{self, BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use addressbook::SERVER_BUSY;
use anyhow::{Context, bail};
use chat_p2p::room::{self, RoomError, RoomReader, RoomWriter, SERVER_NAME};
use clap::{Args, ValueEnum};
use protocol::addressbook::{HEADER_LEN, Kind, Message, UNKNOWN_PROTOCOL, parse_header};
use protocol::chat::ChatError;
use server_kit::accept::MAX_PENDING_REFUSALS;
use server_kit::fd_limit::{self, OpenFileLimit};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until, timeout};

use super::Table;
use crate::commands::{resolve, runtime};

/// Open files this process needs besides its connections: the runtime, stdio, the child's pipe.
const SPARE_FILES: u64 = 64;
/// Connections being opened at once: enough to keep the server busy, few enough not to overflow
/// its accept queue.
const OPENING_AT_ONCE: usize = 32;
/// How long no chat client may hear the probe before the first client says it again (for those
/// that joined after it was said).
const PROBE_QUIET: Duration = Duration::from_millis(500);
/// The start of the chat room's proof message.
const PROBE: &str = "idle bench probe";
/// What every address-book connection asks.
const QUERY_EMAIL: &str = "luke@gmail.com";
/// The address book's idle timeout while benchmarked (seconds): no connection is closed for it.
const ADDRESSBOOK_IDLE_SECS: u64 = 24 * 3600;
/// Most connection failures quoted in full.
const QUOTED_FAILURES: usize = 3;

/// Which server to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum System {
    /// The chat room (seed 003): every client sends its username, then stays silent.
    Chat,
    /// The address book (seed 002): every client connects, then stays silent.
    Addressbook,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Chat => "chat room",
            System::Addressbook => "address book",
        }
    }
}

/// Arguments of `cli bench idle`.
#[derive(Debug, Args)]
#[command(after_long_help = "\
Starts the server as a child process (`cli chat serve --max-clients L` or `cli addressbook serve \
--max-connections L`, on port 0), unless --server is given, and lifts its own open-file limit \
to the hard limit (the servers do the same at start-up); a limit too low for N stops the run \
with a message. It then opens N connections, proves that the server serves exactly min(N, L) \
of them (in the chat room every client must receive one message from the first; on the address \
book every connection must answer a query) and that the others were told why they were \
refused, and, with the server full, that one more connection is refused cleanly. Prints a \
Markdown table: the time to open the connections and to prove them served, and the server's \
resident memory (VmRSS) before and with all of them open, per connection. Exits 0 when every \
check passed, 1 when one failed, 2 when the run could not be made.")]
pub struct IdleBenchArgs {
    /// The server to load.
    #[arg(value_enum)]
    system: System,
    /// Connections to open and hold at once.
    #[arg(long, value_name = "N", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(2..=1_000_000))]
    connections: u64,
    /// The server's connection limit (default: N). The server started is given it; with
    /// --server, say what that server was started with.
    #[arg(long, value_name = "L", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    limit: Option<u64>,
    /// Load the server running at this address instead of starting one. Its memory is reported
    /// when its process can be found (a listener of this user on this machine).
    #[arg(long, value_name = "HOST:PORT")]
    server: Option<String>,
    /// Give up on each step (the server starting, opening the connections, their answers) after
    /// this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    timeout: u64,
}

/// What the run does.
#[derive(Debug, Clone)]
struct Plan {
    system: System,
    connections: usize,
    limit: usize,
    /// The limit was not given for a running server: N is assumed.
    limit_assumed: bool,
    patience: Duration,
}

impl Plan {
    fn new(args: &IdleBenchArgs) -> anyhow::Result<Plan> {
        let connections = usize::try_from(args.connections)?;
        Ok(Plan {
            system: args.system,
            connections,
            limit: args.limit.map_or(Ok(connections), usize::try_from)?,
            limit_assumed: args.limit.is_none() && args.server.is_some(),
            patience: Duration::from_secs(args.timeout),
        })
    }

    /// The connections the server should serve: the others it should refuse.
    fn expected_served(&self) -> usize {
        self.connections.min(self.limit)
    }
}

/// Runs the benchmark and prints its table.
pub fn run(args: IdleBenchArgs) -> anyhow::Result<ExitCode> {
    let plan = Plan::new(&args)?;
    let files = ensure_open_files(&plan, args.server.is_none())?;
    let server = match &args.server {
        None => Server::start(&plan)?,
        Some(target) => Server::find(target, plan.patience)?,
    };
    println!(
        "{} idle connections to the {} at {}{}; limit {}{}; open-file limit {}",
        plan.connections,
        plan.system.name(),
        server.addr,
        server.describe_origin(),
        plan.limit,
        if plan.limit_assumed {
            " (assumed: pass --limit)"
        } else {
            ""
        },
        files.map_or_else(|| "unknown".to_string(), |f| f.soft.to_string()),
    );
    let runtime = runtime()?;
    let outcome = runtime.block_on(measure(&plan, &server))?;
    // The server goes first, so that the closes are its (and so its TIME_WAITs): ours would
    // tie up N local ports for a minute.
    drop(server);
    drop(runtime);
    Ok(outcome.print(&plan))
}

/// Lifts this process's open-file limit to the hard limit and checks that it covers the run
/// (and the server's, which inherits the same hard limit when started here).
fn ensure_open_files(plan: &Plan, starts_server: bool) -> anyhow::Result<Option<OpenFileLimit>> {
    let limit = match fd_limit::raise_to_hard_limit() {
        Ok(limit) => limit,
        Err(err) => {
            eprintln!("warning: cannot read or raise the open-file limit ({err}); going on");
            return Ok(None);
        }
    };
    let ours = plan.connections as u64 + 1 + SPARE_FILES;
    let servers = (plan.limit + MAX_PENDING_REFUSALS) as u64 + SPARE_FILES;
    let needed = if starts_server {
        ours.max(servers)
    } else {
        ours
    };
    if limit.soft < needed {
        bail!(
            "{} connections (limit {}) need about {needed} open files per process, but the \
             open-file limit is {} (hard limit {}): raise the hard limit (`ulimit -Hn`, \
             /etc/security/limits.conf, LimitNOFILE= for a service) or lower --connections",
            plan.connections,
            plan.limit,
            limit.soft,
            limit.hard
        );
    }
    Ok(Some(limit))
}

/// The server under load: a child process of ours, or a running one.
#[derive(Debug)]
struct Server {
    addr: SocketAddr,
    /// Its process, when known: for its memory.
    pid: Option<u32>,
    /// Killed when the benchmark ends.
    child: Option<Child>,
}

impl Server {
    /// Starts `cli chat serve` or `cli addressbook serve` on port 0 with the plan's limit.
    fn start(plan: &Plan) -> anyhow::Result<Server> {
        let exe =
            std::env::current_exe().context("cannot find this program to start the server")?;
        let mut command = Command::new(exe);
        command.args(server_arguments(plan));
        // Ten thousand "connection opened" lines would cost more than the connections.
        command
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = command.spawn().context("cannot start the server process")?;
        let pid = child.id();
        let stdout = child.stdout.take().context("the server's stdout")?;
        let mut server = Server {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            pid: Some(pid),
            child: Some(child),
        };
        let first_line = first_line_of(stdout, plan.patience)?;
        server.addr = address_in(&first_line)
            .with_context(|| format!("the server's first line names no address: {first_line:?}"))?;
        Ok(server)
    }

    /// A running server at `target`, and its process if this user can see it.
    fn find(target: &str, patience: Duration) -> anyhow::Result<Server> {
        let addr = runtime()?.block_on(resolve(target, target))?;
        std::net::TcpStream::connect_timeout(&addr, patience)
            .with_context(|| format!("cannot reach the server at {target}"))?;
        Ok(Server {
            addr,
            pid: listening_pid(addr),
            child: None,
        })
    }

    fn describe_origin(&self) -> String {
        match (&self.child, self.pid) {
            (Some(_), Some(pid)) => format!(" (started here, pid {pid})"),
            (None, Some(pid)) => format!(" (running, pid {pid})"),
            _ => " (running; its process is not visible here)".to_string(),
        }
    }

    /// The server's resident memory in KiB, when its process is known.
    fn resident_kib(&self) -> Option<u64> {
        resident_kib(self.pid?).ok()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The command line of the server to start.
fn server_arguments(plan: &Plan) -> Vec<String> {
    let limit = plan.limit.to_string();
    let idle = ADDRESSBOOK_IDLE_SECS.to_string();
    let args: Vec<&str> = match plan.system {
        System::Chat => vec!["chat", "serve", "--port", "0", "--max-clients", &limit],
        System::Addressbook => vec![
            "addressbook",
            "serve",
            "--port",
            "0",
            "--max-connections",
            &limit,
            "--idle-timeout",
            &idle,
        ],
    };
    args.into_iter().map(str::to_string).collect()
}

/// The first line a server prints, within `patience`; the rest of its output is read and
/// discarded by the same thread until it exits.
fn first_line_of(
    stdout: impl io::Read + Send + 'static,
    patience: Duration,
) -> anyhow::Result<String> {
    let (sender, receiver) = std_mpsc::sync_channel(1);
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let _ = sender.send(lines.next());
        lines.for_each(drop);
    });
    match receiver.recv_timeout(patience) {
        Ok(Some(Ok(line))) => Ok(line),
        Ok(Some(Err(err))) => Err(err).context("cannot read the server's output"),
        Ok(None) | Err(std_mpsc::RecvTimeoutError::Disconnected) => {
            bail!("the server exited before saying where it listens (its errors are above)")
        }
        Err(std_mpsc::RecvTimeoutError::Timeout) => {
            bail!("the server did not say where it listens within {patience:?}")
        }
    }
}

/// The socket address in a server's status line (`... on 127.0.0.1:PORT...`).
fn address_in(line: &str) -> Option<SocketAddr> {
    line.split_whitespace()
        .find_map(|word| word.trim_end_matches('.').parse().ok())
}

/// A process's resident memory in KiB (`VmRSS` in `/proc/PID/status`).
fn resident_kib(pid: u32) -> io::Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| io::Error::other(format!("no VmRSS in /proc/{pid}/status")))
}

/// The process of this user listening on `addr`'s port, found through `/proc`: the listening
/// socket's inode in `/proc/net/tcp{,6}`, then the process holding that inode open.
fn listening_pid(addr: SocketAddr) -> Option<u32> {
    let inodes: Vec<String> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| fs::read_to_string(table).ok())
        .flat_map(|table| listening_inodes(&table, addr.port()))
        .collect();
    if inodes.is_empty() {
        return None;
    }
    let targets: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    fs::read_dir("/proc")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            holds_any(
                &Path::new("/proc").join(pid.to_string()).join("fd"),
                &targets,
            )
        })
}

/// The inodes of the listening sockets on `port` in a `/proc/net/tcp` table.
fn listening_inodes(table: &str, port: u16) -> Vec<String> {
    const LISTEN: &str = "0A";
    let port = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (local, state, inode) = (fields.get(1)?, fields.get(3)?, fields.get(9)?);
            (local.ends_with(&port) && *state == LISTEN).then(|| inode.to_string())
        })
        .collect()
}

/// Whether the fd folder `fds` holds one of `targets` (`socket:[inode]` links).
fn holds_any(fds: &Path, targets: &[String]) -> bool {
    let Ok(entries) = fs::read_dir(fds) else {
        return false; // another user's process, or gone
    };
    entries.filter_map(Result::ok).any(|entry| {
        fs::read_link(entry.path())
            .is_ok_and(|link| targets.iter().any(|t| link.as_os_str() == t.as_str()))
    })
}

/// What became of one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Report {
    /// Not connected yet.
    Opening,
    /// Connected (and, in the chat room, sent its username).
    Connected,
    /// Could not connect.
    ConnectFailed(String),
    /// Proved served: received the chat message, or answered its query.
    Served,
    /// Told by the server why it was turned away: this text.
    Refused(String),
    /// Closed or reset by the server without a word. Over the limit this is a refusal too: a
    /// server answers only so many refusals at once (`server_kit::accept::MAX_PENDING_REFUSALS`)
    /// and closes the rest unanswered.
    CutOff(String),
    /// Answered something unexpected, or failed otherwise.
    Broken(String),
}

impl Report {
    /// The report for a connection whose read or write failed with `err`.
    fn failed(err: io::Error) -> Report {
        if protocol::framed::is_connection_lost(&err) {
            Report::CutOff(err.to_string())
        } else {
            Report::Broken(err.to_string())
        }
    }
}

/// Where each connection stands.
#[derive(Debug)]
struct Tally {
    states: Vec<Report>,
    /// The chat room's first client, which is served once anyone hears it.
    speaker: Option<usize>,
}

impl Tally {
    fn new(connections: usize, speaker: Option<usize>) -> Tally {
        Tally {
            states: vec![Report::Opening; connections],
            speaker,
        }
    }

    fn apply(&mut self, index: usize, report: Report) {
        if report == Report::Served {
            if let Some(speaker) = self.speaker {
                if self.states[speaker] == Report::Connected {
                    self.states[speaker] = Report::Served;
                }
            }
        }
        self.states[index] = report;
    }

    fn count(&self, pick: impl Fn(&Report) -> bool) -> usize {
        self.states.iter().filter(|state| pick(state)).count()
    }

    fn opening(&self) -> usize {
        self.count(|s| *s == Report::Opening)
    }

    fn undecided(&self) -> usize {
        self.count(|s| *s == Report::Connected)
    }

    fn served(&self) -> usize {
        self.count(|s| *s == Report::Served)
    }

    fn refusals(&self) -> Vec<&str> {
        self.states
            .iter()
            .filter_map(|s| match s {
                Report::Refused(text) => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }

    fn cut_off(&self) -> usize {
        self.count(|s| matches!(s, Report::CutOff(_)))
    }

    /// Connections that failed or never heard back, and, unless `cut_off_is_refusal`, those
    /// closed without a word; with a few reasons.
    fn failures(&self, cut_off_is_refusal: bool) -> (usize, Vec<String>) {
        let reasons: Vec<String> = self
            .states
            .iter()
            .filter_map(|s| match s {
                Report::ConnectFailed(why) => Some(format!("connecting: {why}")),
                Report::CutOff(why) if !cut_off_is_refusal => Some(format!("cut off: {why}")),
                Report::Broken(why) => Some(why.clone()),
                Report::Opening => Some("not connected in time".to_string()),
                Report::Connected => Some("no answer in time".to_string()),
                Report::Served | Report::Refused(_) | Report::CutOff(_) => None,
            })
            .collect();
        let count = reasons.len();
        (count, reasons.into_iter().take(QUOTED_FAILURES).collect())
    }
}

/// What the run measured.
#[derive(Debug)]
struct Outcome {
    tally: Tally,
    /// From the first connect until every connection was open (the chat clients' names sent).
    connect_time: Duration,
    /// From the first connect until every connection was proved served (or refused).
    proof_time: Duration,
    /// Chat probe rounds sent (0 for the address book).
    probes: u32,
    /// The connection past a full server, when one was tried.
    one_more: Option<Report>,
    rss_before: Option<u64>,
    rss_after: Option<u64>,
}

/// Everything the connection tasks share.
#[derive(Debug)]
struct Shared {
    system: System,
    addr: SocketAddr,
    patience: Duration,
    opening: Semaphore,
    /// Set once every connection is open: the address-book clients then ask their query.
    go: watch::Receiver<bool>,
    reports: mpsc::Sender<(usize, Report)>,
    /// Makes the chat usernames unique to this run.
    run_id: u32,
}

async fn measure(plan: &Plan, server: &Server) -> anyhow::Result<Outcome> {
    let rss_before = server.resident_kib();
    let (go_sender, go) = watch::channel(false);
    let (reports, mut inbox) = mpsc::channel(plan.connections + 1);
    let shared = Arc::new(Shared {
        system: plan.system,
        addr: server.addr,
        patience: plan.patience,
        opening: Semaphore::new(OPENING_AT_ONCE),
        go,
        reports,
        run_id: std::process::id(),
    });
    let started = Instant::now();
    let mut clients = JoinSet::new();
    // In the chat room the first client, opened alone and so served first, says the probe.
    let mut speaker = match plan.system {
        System::Chat => Some(Speaker::join(&shared, &mut clients).await?),
        System::Addressbook => None,
    };
    let mut tally = Tally::new(plan.connections, speaker.as_ref().map(|_| 0));
    if speaker.is_some() {
        tally.apply(0, Report::Connected);
    }
    for index in usize::from(speaker.is_some())..plan.connections {
        clients.spawn(client(index, Arc::clone(&shared)));
    }
    let mut waiting = Waiting::new(&mut inbox, &mut tally, plan.patience);
    waiting.until(|t| t.opening() == 0, None).await;
    let connect_time = started.elapsed();
    let _ = go_sender.send(true);
    let mut waiting = Waiting::new(&mut inbox, &mut tally, plan.patience);
    waiting
        .until(|t| t.undecided() == 0, speaker.as_mut())
        .await;
    let proof_time = started.elapsed();
    let rss_after = server.resident_kib();
    let one_more = if plan.limit <= plan.connections {
        Some(one_more(plan.connections, &shared).await)
    } else {
        None
    };
    clients.abort_all();
    Ok(Outcome {
        tally,
        connect_time,
        proof_time,
        probes: speaker.map_or(0, |speaker| speaker.rounds),
        one_more,
        rss_before,
        rss_after,
    })
}

/// Applying the connections' reports to the tally until a condition holds or time is up.
struct Waiting<'a> {
    inbox: &'a mut mpsc::Receiver<(usize, Report)>,
    tally: &'a mut Tally,
    deadline: Instant,
}

impl<'a> Waiting<'a> {
    fn new(
        inbox: &'a mut mpsc::Receiver<(usize, Report)>,
        tally: &'a mut Tally,
        patience: Duration,
    ) -> Waiting<'a> {
        Waiting {
            inbox,
            tally,
            deadline: Instant::now() + patience,
        }
    }

    /// Waits until `done` holds or the deadline passes. With a `speaker`, its probe is said at
    /// once and again whenever no one has heard one for [`PROBE_QUIET`] (the clients that joined
    /// after the last one): one wave of deliveries at a time, so a slow server is not swamped.
    async fn until(&mut self, done: impl Fn(&Tally) -> bool, mut speaker: Option<&mut Speaker>) {
        let mut next_probe = Instant::now();
        while !done(self.tally) {
            tokio::select! {
                report = self.inbox.recv() => match report {
                    Some((index, report)) => {
                        if report == Report::Served {
                            next_probe = Instant::now() + PROBE_QUIET;
                        }
                        self.tally.apply(index, report);
                    }
                    None => return,
                },
                () = sleep_until(next_probe), if speaker.is_some() => {
                    if let Some(talking) = speaker.as_deref_mut() {
                        if talking.say().await.is_err() {
                            speaker = None;
                        }
                    }
                    next_probe = Instant::now() + PROBE_QUIET;
                }
                () = sleep_until(self.deadline) => return,
            }
        }
    }
}

/// One connection's life: open it, learn whether it is served, and if so hold it (until the
/// task is aborted at the end of the run).
async fn client(index: usize, shared: Arc<Shared>) {
    let opened = {
        let _turn = shared.opening.acquire().await;
        open(index, &shared).await
    };
    let mut connection = match opened {
        Ok(connection) => connection,
        Err(why) => {
            let _ = shared
                .reports
                .send((index, Report::ConnectFailed(why)))
                .await;
            return;
        }
    };
    let _ = shared.reports.send((index, Report::Connected)).await;
    let report = connection.verdict(shared.go.clone()).await;
    let served = report == Report::Served;
    let _ = shared.reports.send((index, report)).await;
    if served {
        std::future::pending::<()>().await;
    }
}

/// An open connection to the server.
enum Connection {
    Chat(RoomWriter, RoomReader),
    Addressbook(TcpStream),
}

/// Opens connection `index`: in the chat room, joined under a username of this run.
async fn open(index: usize, shared: &Shared) -> Result<Connection, String> {
    match shared.system {
        System::Chat => {
            let name = username(shared.run_id, index);
            let (writer, reader) = room::join(shared.addr, &name, shared.patience)
                .await
                .map_err(|err| err.to_string())?;
            Ok(Connection::Chat(writer, reader))
        }
        System::Addressbook => server_kit::connect(shared.addr, shared.patience)
            .await
            .map(Connection::Addressbook)
            .map_err(|err| err.to_string()),
    }
}

/// The chat username of connection `index` of run `run_id`: unique, even in a running room.
fn username(run_id: u32, index: usize) -> String {
    format!("idle{run_id}-{index}")
}

impl Connection {
    /// Whether the server serves this connection: the chat room's probe arrives, or the
    /// address book answers a query (asked once `go` is set, unless the server speaks first).
    async fn verdict(&mut self, go: watch::Receiver<bool>) -> Report {
        match self {
            Connection::Chat(_, reader) => chat_verdict(reader).await,
            Connection::Addressbook(stream) => addressbook_verdict(stream, go).await,
        }
    }
}

/// Reads the room until the probe or a notice from the server arrives.
async fn chat_verdict(reader: &mut RoomReader) -> Report {
    loop {
        match reader.next().await {
            Ok(Some(message)) if message.user == SERVER_NAME => {
                return Report::Refused(message.text);
            }
            Ok(Some(message)) if message.text.starts_with(PROBE) => return Report::Served,
            Ok(Some(_)) => {} // someone else talking in a running room
            Ok(None) => return Report::CutOff("closed without a notice".into()),
            Err(RoomError::Frame(ChatError::Io(err))) => return Report::failed(err),
            Err(err @ RoomError::Frame(ChatError::Truncated { .. })) => {
                return Report::CutOff(err.to_string());
            }
            Err(err) => return Report::Broken(err.to_string()),
        }
    }
}

/// Asks one query once `go` is set (or reads what the server says first) and judges the
/// answer.
async fn addressbook_verdict(stream: &mut TcpStream, mut go: watch::Receiver<bool>) -> Report {
    let spoke_first = tokio::select! {
        _ = go.wait_for(|go| *go) => false,
        _ = stream.readable() => true,
    };
    if !spoke_first {
        let query = Message::query(QUERY_EMAIL)
            .expect("a short e-mail")
            .to_bytes();
        if let Err(err) = stream.write_all(&query).await {
            return Report::failed(err);
        }
    }
    match read_response(stream).await {
        Ok(Some(body)) if body == SERVER_BUSY => Report::Refused(body),
        Ok(Some(body)) if body == UNKNOWN_PROTOCOL => Report::Broken(body),
        Ok(Some(_)) => Report::Served,
        Ok(None) => Report::CutOff("closed without an answer".into()),
        Err(err) => Report::failed(err),
    }
}

/// One `R` message's body; `None` when the server closed before one.
async fn read_response(stream: &mut TcpStream) -> io::Result<Option<String>> {
    let mut header = [0u8; HEADER_LEN];
    match stream.read_exact(&mut header).await {
        Ok(_) => {}
        Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(err) => return Err(err),
    }
    let (kind, len) = parse_header(header).map_err(io::Error::other)?;
    if kind != Kind::Response {
        return Err(io::Error::other("the server sent a query"));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await?;
    String::from_utf8(body)
        .map(Some)
        .map_err(|_| io::Error::other("the answer is not UTF-8"))
}

/// The chat room's first client: it says the probe that proves the others are in the room.
struct Speaker {
    /// Open until the end of the run: closing it would leave the room.
    writer: RoomWriter,
    name: String,
    /// Probes said.
    rounds: u32,
}

impl Speaker {
    /// Joins the room as connection 0; a task of `clients` watches its reader for a refusal.
    async fn join(shared: &Arc<Shared>, clients: &mut JoinSet<()>) -> anyhow::Result<Speaker> {
        let Connection::Chat(writer, mut reader) = open(0, shared)
            .await
            .map_err(anyhow::Error::msg)
            .context("the first connection failed")?
        else {
            unreachable!("the chat room opens chat connections")
        };
        let reports = shared.reports.clone();
        clients.spawn(async move {
            let report = chat_verdict(&mut reader).await;
            let _ = reports.send((0, report)).await;
            std::future::pending::<()>().await;
        });
        Ok(Speaker {
            writer,
            name: username(shared.run_id, 0),
            rounds: 0,
        })
    }

    /// Says the probe once more.
    async fn say(&mut self) -> Result<(), room::RoomError> {
        self.rounds += 1;
        let text = format!("{PROBE} {} from {}", self.rounds, self.name);
        self.writer.send(&text).await
    }
}

/// Opens connection N+1 on the full server and judges it like the others (its query is asked
/// at once).
async fn one_more(index: usize, shared: &Shared) -> Report {
    let judged = async {
        match open(index, shared).await {
            Ok(mut connection) => {
                let (_go, go) = watch::channel(true);
                connection.verdict(go).await
            }
            Err(why) => Report::ConnectFailed(why),
        }
    };
    timeout(shared.patience, judged)
        .await
        .unwrap_or_else(|_| Report::Broken("no answer in time".into()))
}

/// The connections by outcome, as the table and the checks count them.
#[derive(Debug)]
struct Counts {
    /// The connections the server should serve (the others it should refuse).
    expected: usize,
    served: usize,
    /// Turned away with a notice, and the first notice.
    told: usize,
    notice: Option<String>,
    /// Closed without a word while the server was full: refusals too.
    cut_off: usize,
    /// Everything else, and a few reasons.
    failed: usize,
    reasons: Vec<String>,
}

impl Counts {
    fn new(tally: &Tally, plan: &Plan) -> Counts {
        let expected = plan.expected_served();
        let served = tally.served();
        let refusals = tally.refusals();
        // When the server kept exactly its limit, what it cut off was over the limit.
        let cut_off_is_refusal =
            served == expected && refusals.len() + tally.cut_off() == plan.connections - expected;
        let (failed, reasons) = tally.failures(cut_off_is_refusal);
        Counts {
            expected,
            served,
            told: refusals.len(),
            notice: refusals.first().map(|text| text.to_string()),
            cut_off: if cut_off_is_refusal {
                tally.cut_off()
            } else {
                0
            },
            failed,
            reasons,
        }
    }

    fn refused(&self) -> usize {
        self.told + self.cut_off
    }
}

impl Outcome {
    /// Prints the table and the checks; the exit status is 0 when every check passed.
    fn print(&self, plan: &Plan) -> ExitCode {
        let counts = Counts::new(&self.tally, plan);
        let mut table = Table::new(&[
            "server",
            "connections",
            "limit",
            "connect s",
            "all served s",
            "served",
            "refused",
            "failed",
            "one more",
            "RSS before",
            "RSS with all open",
            "KiB per connection",
        ]);
        table.push(self.row(plan, &counts));
        println!();
        print!("{}", table.render());
        println!();
        let checks = self.checks(plan, &counts);
        for (passed, text) in &checks {
            println!("{}: {text}", if *passed { "ok" } else { "FAILED" });
        }
        println!("{}", self.memory_line());
        if checks.iter().all(|(passed, _)| *passed) {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        }
    }

    fn row(&self, plan: &Plan, counts: &Counts) -> Vec<String> {
        let kib =
            |value: Option<u64>| value.map_or_else(|| "-".to_string(), |v| format!("{v} KiB"));
        vec![
            plan.system.name().to_string(),
            plan.connections.to_string(),
            plan.limit.to_string(),
            format!("{:.2}", self.connect_time.as_secs_f64()),
            format!("{:.2}", self.proof_time.as_secs_f64()),
            counts.served.to_string(),
            counts.refused().to_string(),
            counts.failed.to_string(),
            match &self.one_more {
                None => "not tried".to_string(),
                Some(Report::Refused(_)) => "refused".to_string(),
                Some(Report::Served) => "served".to_string(),
                Some(_) => "failed".to_string(),
            },
            kib(self.rss_before),
            kib(self.rss_after),
            self.kib_per_connection()
                .map_or_else(|| "-".to_string(), |kib| format!("{kib:.1}")),
        ]
    }

    fn kib_per_connection(&self) -> Option<f64> {
        let grown = self.rss_after?.saturating_sub(self.rss_before?);
        let served = self.tally.served();
        (served > 0).then(|| grown as f64 / served as f64)
    }

    /// Each expectation, passed or not, in words.
    fn checks(&self, plan: &Plan, counts: &Counts) -> Vec<(bool, String)> {
        let Counts {
            expected, served, ..
        } = *counts;
        let mut checks = vec![(
            served == expected,
            format!(
                "none refused below the limit: {served} of {expected} expected served; {}",
                self.proof(plan.system)
            ),
        )];
        let over = plan.connections - expected;
        if over > 0 || counts.told > 0 {
            let cut_off = match counts.cut_off {
                0 => String::new(),
                n => format!(
                    " ({n} of them closed without a word: more refusals at once than the server \
                     answers)"
                ),
            };
            checks.push((
                counts.refused() == over,
                format!(
                    "refused over the limit: {} of {over}, told {}{cut_off}",
                    counts.refused(),
                    quote(counts.notice.as_deref()),
                ),
            ));
        }
        if counts.failed > 0 {
            checks.push((
                false,
                format!(
                    "{} connections failed or were closed unexplained: {}",
                    counts.failed,
                    counts.reasons.join("; ")
                ),
            ));
        }
        if let Some(report) = &self.one_more {
            checks.push(one_more_check(plan.connections + 1, report));
        }
        checks
    }

    /// How the served connections were proved served.
    fn proof(&self, system: System) -> String {
        match system {
            System::Chat if self.probes == 1 => {
                "each received the first client's message (said once)".to_string()
            }
            System::Chat => format!(
                "each received the first client's message (said {} times, for late joiners)",
                self.probes
            ),
            System::Addressbook => "each answered a query".to_string(),
        }
    }

    fn memory_line(&self) -> String {
        match (self.rss_before, self.rss_after, self.kib_per_connection()) {
            (Some(before), Some(after), Some(each)) => format!(
                "memory: the server's resident set grew from {before} KiB to {after} KiB with {} \
                 connections open: {each:.1} KiB per idle connection",
                self.tally.served()
            ),
            _ => "memory: not reported (the server's process cannot be found from here)".into(),
        }
    }
}

/// The check on connection N+1.
fn one_more_check(number: usize, report: &Report) -> (bool, String) {
    match report {
        Report::Refused(text) => (
            true,
            format!(
                "connection {number} refused cleanly: told {}",
                quote(Some(text))
            ),
        ),
        Report::Served => (
            false,
            format!("connection {number} was served over the limit"),
        ),
        Report::ConnectFailed(why) | Report::CutOff(why) | Report::Broken(why) => (
            false,
            format!("connection {number} was not refused cleanly: {why}"),
        ),
        Report::Opening | Report::Connected => (false, format!("connection {number}: no answer")),
    }
}

fn quote(text: Option<&str>) -> String {
    text.map_or_else(|| "nothing".to_string(), |text| format!("{text:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_is_found_in_either_servers_first_line() {
        let chat = "Listening for connections on 127.0.0.1:4567...";
        let book = "Address book listening on 127.0.0.1:8080";
        assert_eq!(
            address_in(chat),
            Some(SocketAddr::from(([127, 0, 0, 1], 4567)))
        );
        assert_eq!(
            address_in(book),
            Some(SocketAddr::from(([127, 0, 0, 1], 8080)))
        );
        assert_eq!(address_in("no address here"), None);
    }

    #[test]
    fn listening_sockets_are_picked_by_port_and_state() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
            0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4242 1\n\
            1: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000  1000        0 4343 1\n\
            2: 0100007F:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4444 1\n";
        assert_eq!(listening_inodes(table, 8080), vec!["4242".to_string()]);
        assert!(listening_inodes(table, 80).is_empty());
    }

    #[test]
    fn this_process_is_found_listening_and_its_memory_read() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        assert_eq!(listening_pid(addr), Some(std::process::id()));
        assert!(resident_kib(std::process::id()).unwrap() > 0);
        drop(listener);
        assert_eq!(listening_pid(addr), None);
    }

    #[test]
    fn the_speaker_is_served_once_anyone_hears_it() {
        let mut tally = Tally::new(3, Some(0));
        tally.apply(0, Report::Connected);
        tally.apply(1, Report::Connected);
        tally.apply(2, Report::Connected);
        assert_eq!((tally.opening(), tally.undecided()), (0, 3));
        tally.apply(1, Report::Served);
        tally.apply(2, Report::Refused("full".into()));
        assert_eq!(tally.served(), 2);
        assert_eq!(tally.refusals(), vec!["full"]);
        assert_eq!(tally.undecided(), 0);
        assert_eq!(tally.failures(false).0, 0);
    }
}
