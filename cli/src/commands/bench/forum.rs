//! `cli bench forum`: forum commands over UDP, on the reliable-datagram layer, with and without
//! simulated loss.
//!
//! For each `--loss` level a set of clients (50 by default) connects with the forum's client
//! library ([`forum_server::client`]), each through a relay of its own that drops that share of
//! the datagrams both ways ([`LossyRelay`], which serves one client), or directly at 0%. Each
//! client logs in as a new user (`bench<level>_<n>`: the `user` and `newPw` steps), creates a
//! thread named after itself and posts one message to it. Then, in every round, each client
//! repeats `--command` in a closed loop, one command in flight as the seed's client has it (the
//! next goes once the reply is in): by default RDT of its own thread (a read of one file under the
//! forum's lock); LST lists every thread; MSG posts to its own thread, a durable write (the thread
//! file replaced and flushed to disk). A reply other than `done` is an error, as is a command the
//! reliable layer could not deliver. Rounds of the levels alternate (0%, 5%, then 5%, 0%, ...), so
//! whatever else the machine does weighs on them alike; the report gives commands per second and
//! latency percentiles per level, with the clients' retransmissions and the datagrams the relays
//! dropped.

use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use clap::{Args, ValueEnum};
use forum_server::Forum;
use forum_server::client::{ForumClient, TransportKind};
use forum_server::server::{ServerConfig, Transport};
use protocol::forum::{Cmd, Envelope};
use server_kit::lossy_relay::LossyRelay;
use tokio::net::UdpSocket;

use super::load::{
    ANSWER_TIMEOUT, InProcessServer, LOOPBACK, LoadArgs, Plan, Report, Round, Series, Tally,
    Verdict, progress,
};
use crate::commands::scratch::ScratchDir;

/// Every benchmark account's password.
const PASSWORD: &str = "bench-password";
/// The text of the messages posted.
const TEXT: &str = "a benchmark message";

/// Arguments of `cli bench forum`.
#[derive(Debug, Args)]
pub struct ForumBenchArgs {
    #[command(flatten)]
    load: LoadArgs,
    /// Percent of datagrams each client's relay drops, both ways (0: no relay); a
    /// comma-separated list measures each level, their rounds alternating.
    #[arg(long, value_name = "PERCENT", value_delimiter = ',', default_values_t = [0.0, 5.0])]
    loss: Vec<f64>,
    /// The command each client repeats.
    #[arg(long, value_enum, default_value_t = Command::Rdt)]
    command: Command,
    /// Seed of the relays' choice of datagrams to drop (client n's relay uses seed + n).
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// A command of the measured loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Command {
    /// Read the client's own thread.
    Rdt,
    /// List the threads.
    Lst,
    /// Post a message to the client's own thread (a durable write).
    Msg,
}

impl Command {
    fn cmd(self) -> Cmd {
        match self {
            Command::Rdt => Cmd::Rdt,
            Command::Lst => Cmd::Lst,
            Command::Msg => Cmd::Msg,
        }
    }

    /// Its arguments for the thread `title`.
    fn args(self, title: &str) -> Vec<String> {
        match self {
            Command::Rdt => vec![title.to_owned()],
            Command::Lst => Vec::new(),
            Command::Msg => vec![title.to_owned(), TEXT.to_owned()],
        }
    }
}

/// A logged-in client, and its relay (kept alive with it).
struct Client {
    forum: ForumClient,
    relay: Option<LossyRelay>,
    /// Its thread.
    title: String,
}

/// The clients of one loss level and what they measured.
struct Level {
    loss: f64,
    clients: Vec<Client>,
    series: Series,
}

/// Runs the benchmark and prints its table; exit status 1 if any command failed.
pub fn run(args: ForumBenchArgs) -> anyhow::Result<ExitCode> {
    let plan = args.load.plan()?;
    for &loss in &args.loss {
        ensure!(
            (0.0..100.0).contains(&loss),
            "--loss must be at least 0 and below 100 (percent), not {loss}"
        );
    }
    let scratch = match plan.server {
        None => Some(ScratchDir::new("forum")?),
        Some(_) => None,
    };
    let target = plan.target(|| start_server(scratch.as_ref().map(ScratchDir::path)))?;
    let cmd = args.command.cmd().as_str();
    println!(
        "forum over UDP: {} clients per loss level, each repeating {cmd} with one command in \
         flight, through a relay of its own dropping the given share of datagrams both ways; {}",
        plan.connections,
        plan.describe(&target, Some("loss level"))
    );
    let levels = plan
        .load_runtime()?
        .block_on(measure_levels(&plan, &args, target.addr()))?;
    target.stop()?;
    let mut report = Report::new("clients", "commands/s");
    for level in &levels {
        report.add(&level.series, plan.connections, "1", None);
    }
    for level in levels {
        report.note(level.summary);
    }
    Ok(report.print())
}

/// What one loss level measured, once its clients are gone.
struct Measured {
    series: Series,
    summary: String,
}

/// Connects and logs in every level's clients, runs the warm-up and the alternating rounds,
/// and closes the sessions.
async fn measure_levels(
    plan: &Plan,
    args: &ForumBenchArgs,
    addr: SocketAddr,
) -> anyhow::Result<Vec<Measured>> {
    let cmd = args.command.cmd().as_str();
    let mut levels = Vec::with_capacity(args.loss.len());
    for (index, &loss) in args.loss.iter().enumerate() {
        let clients = connect_all(addr, index, loss / 100.0, plan.connections, args.seed).await?;
        let label = format!("forum {cmd}, {loss}% loss");
        levels.push(Level {
            loss,
            clients,
            series: Series::new(label),
        });
    }
    if !plan.warmup.is_zero() {
        for level in &mut levels {
            measure_round(level, args.command, plan.warmup).await?;
        }
    }
    for round in 0..plan.rounds {
        let mut order: Vec<usize> = (0..levels.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for index in order {
            let level = &mut levels[index];
            let measured = measure_round(level, args.command, plan.duration).await?;
            level.series.push(&measured);
            progress(round, plan.rounds, 1, &[&measured], &[&level.series.label]);
        }
    }
    let mut results = Vec::with_capacity(levels.len());
    for level in levels {
        results.push(finish(level).await);
    }
    Ok(results)
}

/// `count` clients for the loss level `index` (dropping `loss`, 0 to 1), connected and logged in
/// at once, each with its thread holding one message.
async fn connect_all(
    addr: SocketAddr,
    index: usize,
    loss: f64,
    count: usize,
    seed: u64,
) -> anyhow::Result<Vec<Client>> {
    let joining: Vec<_> = (0..count)
        .map(|n| {
            let name = format!("bench{index}_{n}");
            let relay_seed = seed.wrapping_add(n as u64);
            tokio::spawn(async move { connect(addr, name, loss, relay_seed).await })
        })
        .collect();
    let mut clients = Vec::with_capacity(count);
    for client in joining {
        clients.push(client.await.context("a forum client")??);
    }
    Ok(clients)
}

/// One client: through a relay dropping `loss` unless it is 0, logged in as `name`, with its
/// thread `name` holding one message.
async fn connect(addr: SocketAddr, name: String, loss: f64, seed: u64) -> anyhow::Result<Client> {
    let relay = if loss > 0.0 {
        Some(LossyRelay::start(addr, loss, seed).await?)
    } else {
        None
    };
    let via = relay.as_ref().map_or(addr, LossyRelay::local_addr);
    let mut forum = ForumClient::connect(via, TransportKind::Udp, ANSWER_TIMEOUT).await?;
    let asked = forum.request(Cmd::User.as_str(), &[&name]).await?;
    let step = asked.cmd.as_str();
    ensure!(
        step == Cmd::NewPw.as_str() || step == Cmd::Pw.as_str(),
        "{name} cannot log in: {}",
        shown(&asked)
    );
    let done = forum.request(step, &[PASSWORD]).await?;
    ensure!(is_done(&done), "{name} cannot log in: {}", shown(&done));
    forum.set_user(&name);
    // The thread may be there already (an earlier run against the same server): the post
    // must succeed, not the creation.
    forum.request(Cmd::Crt.as_str(), &[&name]).await?;
    let posted = forum.request(Cmd::Msg.as_str(), &[&name, TEXT]).await?;
    ensure!(
        is_done(&posted),
        "{name} cannot post to its thread: {}",
        shown(&posted)
    );
    Ok(Client {
        forum,
        relay,
        title: name,
    })
}

fn is_done(reply: &Envelope) -> bool {
    reply.cmd == Cmd::Done.as_str()
}

fn shown(reply: &Envelope) -> String {
    format!("{} {:?}", reply.cmd, reply.args)
}

/// One round of `level`: every client repeats `command` for `duration`.
async fn measure_round(
    level: &mut Level,
    command: Command,
    duration: Duration,
) -> anyhow::Result<Round> {
    let start = Instant::now();
    let deadline = start + duration;
    let drivers: Vec<_> = std::mem::take(&mut level.clients)
        .into_iter()
        .map(|client| tokio::spawn(drive(client, command, deadline)))
        .collect();
    let mut tally = Tally::new();
    let mut end = start;
    for driver in drivers {
        let (client, measured, finished) = driver.await.context("a forum client")?;
        level.clients.push(client);
        tally.merge(&measured);
        end = end.max(finished);
    }
    Ok(Round {
        tally,
        elapsed: end - start,
    })
}

/// One client's closed loop until `deadline`: the client back, its tally, when it finished. A
/// command that fails ends the client's round (its session may be gone).
async fn drive(
    mut client: Client,
    command: Command,
    deadline: Instant,
) -> (Client, Tally, Instant) {
    let cmd = command.cmd().as_str();
    let owned = command.args(&client.title);
    let args: Vec<&str> = owned.iter().map(String::as_str).collect();
    let mut tally = Tally::new();
    while Instant::now() < deadline {
        let sent = Instant::now();
        match client.forum.request(cmd, &args).await {
            Ok(reply) if is_done(&reply) => tally.answered(Verdict::Right, sent.elapsed()),
            Ok(reply) => tally.answered(
                Verdict::Wrong(format!("{cmd} by {}: {}", client.title, shown(&reply))),
                sent.elapsed(),
            ),
            Err(err) => {
                tally.failed(1, format!("{cmd} by {}: {err}", client.title));
                break;
            }
        }
    }
    (client, tally, Instant::now())
}

/// Closes `level`'s sessions (all at once) and sums up what the reliable layer and the relays
/// did.
async fn finish(level: Level) -> Measured {
    let (mut retransmissions, mut dropped, mut forwarded) = (0, 0, 0);
    let closing: Vec<_> = level
        .clients
        .into_iter()
        .map(|client| {
            let stats = client.forum.reliable_stats();
            retransmissions += stats.map_or(0, |stats| stats.retransmissions);
            tokio::spawn(async move {
                client.forum.close().await;
                client.relay
            })
        })
        .collect();
    for relay in closing {
        if let Ok(Some(relay)) = relay.await {
            dropped += relay.dropped();
            forwarded += relay.forwarded();
        }
    }
    let path = if level.loss > 0.0 {
        format!(
            "its relays dropped {dropped} of {} datagrams",
            dropped + forwarded
        )
    } else {
        "no relays".to_string()
    };
    Measured {
        summary: format!(
            "{}: the clients retransmitted {retransmissions} datagrams; {path}",
            level.series.label
        ),
        series: level.series,
    }
}

/// The forum on its defaults over UDP, with its data in `folder`, in-process.
fn start_server(folder: Option<&std::path::Path>) -> anyhow::Result<InProcessServer> {
    let folder = folder.context("an in-process forum needs a data folder")?;
    let forum = Forum::open(folder, None)
        .with_context(|| format!("cannot open the forum in {}", folder.display()))?;
    let config = ServerConfig::new(Arc::new(forum));
    InProcessServer::start("forum", move |shutdown| {
        let socket = StdUdpSocket::bind(LOOPBACK).context("cannot bind UDP 127.0.0.1")?;
        socket.set_nonblocking(true)?;
        let socket = UdpSocket::from_std(socket)?;
        let addr = socket.local_addr()?;
        let transfers = server_kit::listen_on(LOOPBACK).context("cannot listen on 127.0.0.1")?;
        Ok((addr, async move {
            forum_server::server::run(Transport::Udp(socket), transfers, config, shutdown).await?;
            Ok(())
        }))
    })
}
