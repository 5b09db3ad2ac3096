//! The closed-loop load generator shared by `cli bench addressbook|record|chat|forum`.
//!
//! - [`LoadArgs`]: the options every one of them takes (`--connections`, `--duration`,
//!   `--warmup`, `--rounds`, `--server`, `--client-threads`), checked into a [`Plan`].
//! - [`Exchanges`] and [`measure_round`]: a TCP request/response protocol driven in a closed
//!   loop. The requests are encoded once, each with the exact bytes of its answer, so checking an
//!   answer costs a comparison and no decoding. Each connection keeps `pipeline` requests in
//!   flight: it writes that many, and for every answer it reads it writes one more, until the
//!   round's time is up; then it waits for the answers still due. Every answer's latency (request
//!   written to answer read) goes into an HdrHistogram; the connections' histograms are merged at
//!   the end of the round. An answer that differs from the expected bytes is an error, and since
//!   the stream cannot be followed past it, so is every request of that connection still in
//!   flight; the connection then stops for the round.
//! - [`compare`]: rounds against the target alternating with rounds against the bare echo server
//!   of [`super::echo`] on the same bytes (echo, target, then target, echo, ...), so that whatever
//!   else the machine does weighs on both sides alike; the report gives each side's totals and
//!   the target's requests per second as a fraction of the echo's.
//! - [`InProcessServer`]: a server on a tokio runtime and a thread of its own, built exactly like
//!   the runtime of `cli ... serve`, so that the load generator (on a runtime of its own,
//!   [`Plan::load_runtime`]) and the server do not share workers, and the echo server gets the
//!   same setup as the target.
//! - [`Tally`], [`Series`] and [`Report`]: counts, latencies and the Markdown table.

use std::collections::VecDeque;
use std::fmt::Display;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, ToSocketAddrs};
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::{Buf, BytesMut};
use clap::Args;
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::time::timeout;

use super::Table;
use crate::commands::runtime_builder;

/// 127.0.0.1 on a port the system picks.
pub const LOOPBACK: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0));
/// How long opening one benchmark connection may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection waits for the next answer (or for the server to take its requests)
/// before counting what it awaits as errors.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an in-process server may take to bind, and to stop.
const SERVER_START_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest latency the histograms hold exactly; longer ones are counted as this.
const LATENCY_CEILING: Duration = Duration::from_secs(60);
/// Significant decimal digits the histograms keep.
const LATENCY_DIGITS: u8 = 3;
/// What a connection reads at once.
const READ_BUFFER: usize = 16 * 1024;
/// The longest round or warm-up accepted, in seconds.
const MAX_SECONDS: f64 = 3600.0;
/// The shortest round accepted.
const MIN_ROUND: Duration = Duration::from_millis(100);

/// Options every load benchmark takes.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// Client connections, each a closed loop.
    #[arg(long, short = 'c', value_name = "C", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub connections: u32,
    /// Seconds each measured round lasts.
    #[arg(long, value_name = "S", default_value = "3", value_parser = round_seconds)]
    pub duration: Duration,
    /// Seconds of unmeasured load on each side before the first round (0: none).
    #[arg(long, value_name = "S", default_value = "1", value_parser = warmup_seconds)]
    pub warmup: Duration,
    /// Measured rounds on each side; the report adds them up.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub rounds: u32,
    /// Load a server already running at HOST:PORT instead of starting one in-process.
    #[arg(long, value_name = "H:P")]
    pub server: Option<String>,
    /// Worker threads of the load generator's runtime [default: the number of CPUs, as the
    /// servers' runtimes have].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=256))]
    pub client_threads: Option<u32>,
}

/// A warm-up: 0 to [`MAX_SECONDS`] seconds, fractions allowed.
fn warmup_seconds(text: &str) -> Result<Duration, String> {
    let value: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if !(0.0..=MAX_SECONDS).contains(&value) {
        return Err(format!("expected 0 to {MAX_SECONDS} seconds"));
    }
    Ok(Duration::from_secs_f64(value))
}

/// A round: [`MIN_ROUND`] to [`MAX_SECONDS`] seconds.
fn round_seconds(text: &str) -> Result<Duration, String> {
    let duration = warmup_seconds(text)?;
    if duration < MIN_ROUND {
        return Err(format!(
            "a round lasts at least {} s",
            MIN_ROUND.as_secs_f64()
        ));
    }
    Ok(duration)
}

/// What one benchmark run does, from [`LoadArgs`].
#[derive(Debug, Clone)]
pub struct Plan {
    /// Client connections.
    pub connections: usize,
    /// Each measured round.
    pub duration: Duration,
    /// The unmeasured round before the first, per side (zero: none).
    pub warmup: Duration,
    /// Measured rounds per side.
    pub rounds: usize,
    /// A running server to load, resolved; `None` starts one in-process.
    pub server: Option<SocketAddr>,
    /// Worker threads of the load generator; `None`: tokio's default, one per CPU.
    pub client_threads: Option<usize>,
}

impl LoadArgs {
    /// The plan.
    pub fn plan(&self) -> anyhow::Result<Plan> {
        let server = match &self.server {
            None => None,
            Some(text) => Some(resolve(text)?),
        };
        Ok(Plan {
            connections: self.connections as usize,
            duration: self.duration,
            warmup: self.warmup,
            rounds: self.rounds as usize,
            server,
            client_threads: self.client_threads.map(|n| n as usize),
        })
    }
}

/// The first address `text` (`HOST:PORT`) names.
fn resolve(text: &str) -> anyhow::Result<SocketAddr> {
    text.to_socket_addrs()
        .with_context(|| format!("cannot resolve --server {text} (expected HOST:PORT)"))?
        .next()
        .with_context(|| format!("--server {text} has no address"))
}

impl Plan {
    /// The server to load: the running one of `--server`, or one `start` starts in-process.
    pub fn target(
        &self,
        start: impl FnOnce() -> anyhow::Result<InProcessServer>,
    ) -> anyhow::Result<Target> {
        match self.server {
            Some(addr) => Ok(Target::Running(addr)),
            None => Ok(Target::InProcess(start()?)),
        }
    }

    /// The load generator's runtime: multi-threaded, apart from every in-process server's.
    pub fn load_runtime(&self) -> anyhow::Result<tokio::runtime::Runtime> {
        let mut builder = runtime_builder();
        if let Some(threads) = self.client_threads {
            builder.worker_threads(threads);
        }
        builder
            .thread_name("load generator")
            .build()
            .context("cannot start the load generator's runtime")
    }

    /// One line on what the run does, for the top of the report: the rounds (`per` each
    /// "side" or "loss level", if the run alternates), the warm-up, the server.
    pub fn describe(&self, target: &Target, per: Option<&str>) -> String {
        let warmup = if self.warmup.is_zero() {
            String::new()
        } else {
            format!(" after {} s of warm-up", self.warmup.as_secs_f64())
        };
        let rounds = if self.rounds == 1 { "round" } else { "rounds" };
        let per = per.map_or_else(String::new, |per| format!(" per {per}"));
        format!(
            "{} {rounds} of {} s{per}{warmup}; server {}",
            self.rounds,
            self.duration.as_secs_f64(),
            target.describe()
        )
    }
}

/// The server under load.
#[derive(Debug)]
pub enum Target {
    /// Started by the benchmark, stopped when dropped.
    InProcess(InProcessServer),
    /// Already running (`--server`).
    Running(SocketAddr),
}

impl Target {
    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        match self {
            Target::InProcess(server) => server.addr(),
            Target::Running(addr) => *addr,
        }
    }

    fn describe(&self) -> String {
        match self {
            Target::InProcess(server) => {
                format!("in-process on {} (a runtime of its own)", server.addr())
            }
            Target::Running(addr) => format!("running at {addr}"),
        }
    }

    /// Stops an in-process server, reporting how it ended.
    pub fn stop(self) -> anyhow::Result<()> {
        match self {
            Target::InProcess(server) => server.stop(),
            Target::Running(_) => Ok(()),
        }
    }
}

/// The future a server is served until.
pub type Shutdown = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A server on a multi-threaded tokio runtime of its own (built by [`runtime_builder`], as `cli
/// ... serve` builds it, its workers named `NAME worker` so that a profile tells the servers and
/// the load generator apart) in a thread of its own, until [`InProcessServer::stop`] or drop.
#[derive(Debug)]
pub struct InProcessServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl InProcessServer {
    /// Starts the server `name`: `start`, called inside the new runtime, binds and returns the
    /// address clients use and the future that serves until its [`Shutdown`] completes.
    pub fn start<F, S>(name: &str, start: F) -> anyhow::Result<InProcessServer>
    where
        F: FnOnce(Shutdown) -> anyhow::Result<(SocketAddr, S)> + Send + 'static,
        S: Future<Output = anyhow::Result<()>>,
    {
        let (stop, stopped) = oneshot::channel::<()>();
        let (bound, address) = std::sync::mpsc::channel();
        let worker_name = format!("{name} worker");
        let thread = std::thread::Builder::new()
            .name(format!("{name} server"))
            .spawn(move || {
                runtime_builder()
                    .thread_name(worker_name)
                    .build()?
                    .block_on(async move {
                        let shutdown: Shutdown = Box::pin(async move {
                            let _ = stopped.await;
                        });
                        let (addr, serve) = match start(shutdown) {
                            Ok(started) => started,
                            Err(err) => {
                                let _ = bound.send(Err(err));
                                return Ok(());
                            }
                        };
                        let _ = bound.send(Ok(addr));
                        serve.await
                    })
            })
            .with_context(|| format!("cannot start a thread for the {name} server"))?;
        let addr = address
            .recv_timeout(SERVER_START_TIMEOUT)
            .with_context(|| format!("the {name} server did not start"))?
            .with_context(|| format!("cannot start the {name} server"))?;
        Ok(InProcessServer {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// [`InProcessServer::start`] for a server of one TCP listener on 127.0.0.1, bound with the
    /// servers' own [`server_kit::listen_on`]: `serve` serves it until its [`Shutdown`].
    pub fn tcp<F, S>(name: &str, serve: F) -> anyhow::Result<InProcessServer>
    where
        F: FnOnce(TcpListener, Shutdown) -> S + Send + 'static,
        S: Future<Output = std::io::Result<()>>,
    {
        InProcessServer::start(name, |shutdown| {
            let listener = server_kit::listen_on(LOOPBACK).context("cannot listen on 127.0.0.1")?;
            let addr = listener.local_addr()?;
            let serving = serve(listener, shutdown);
            Ok((addr, async move { Ok(serving.await?) }))
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the server and waits for its thread; the server's error, if it failed.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.halt()
    }

    fn halt(&mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take() {
            Some(thread) => match thread.join() {
                Ok(outcome) => outcome,
                Err(_) => bail!("the in-process server panicked"),
            },
            None => Ok(()),
        }
    }
}

impl Drop for InProcessServer {
    fn drop(&mut self) {
        let _ = self.halt();
    }
}

/// Whether an answer was the one expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The answer the request called for.
    Right,
    /// Another answer (an error response, the wrong record): why it is wrong.
    Wrong(String),
}

/// A request/response protocol over TCP as the closed loop drives it: a fixed set of requests,
/// each encoded once with the answer it must get, byte for byte.
#[derive(Debug, Clone)]
pub struct Exchanges {
    items: Vec<Exchange>,
    rotate: bool,
}

/// One request and its answer.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// What the request asks, for error messages.
    pub what: String,
    /// The request's bytes.
    pub request: Vec<u8>,
    /// The answer's bytes.
    pub answer: Vec<u8>,
}

impl Exchanges {
    /// Connections send `items` in turn, each starting at its own (connection `c` sends item
    /// `c`, `c + 1`, ...).
    pub fn rotating(items: Vec<Exchange>) -> Exchanges {
        Exchanges {
            items,
            rotate: true,
        }
    }

    /// Connection `c` sends item `c` (modulo their number) again and again.
    pub fn one_per_connection(items: Vec<Exchange>) -> Exchanges {
        Exchanges {
            items,
            rotate: false,
        }
    }

    /// The same requests, each answered by its own bytes: what an echo server does.
    pub fn echoed(&self) -> Exchanges {
        let items = self
            .items
            .iter()
            .map(|item| Exchange {
                what: format!("the echo of {}", item.what),
                request: item.request.clone(),
                answer: item.request.clone(),
            })
            .collect();
        Exchanges {
            items,
            rotate: self.rotate,
        }
    }

    /// The request `connection` sends `n`th.
    fn pick(&self, connection: usize, n: u64) -> usize {
        let step = if self.rotate { n as usize } else { 0 };
        connection.wrapping_add(step) % self.items.len().max(1)
    }

    /// Takes the answer to request `index` from the front of `input`: `Ok(false)` while it is
    /// not whole, `Err` when the bytes differ (the stream cannot be followed any further).
    fn answer(&self, index: usize, input: &mut BytesMut) -> Result<bool, String> {
        let item = &self.items[index];
        let have = input.len().min(item.answer.len());
        if input[..have] != item.answer[..have] {
            return Err(format!(
                "{}: expected \"{}\", got \"{}\"",
                item.what,
                shown(&item.answer),
                shown(input)
            ));
        }
        if have < item.answer.len() {
            return Ok(false);
        }
        input.advance(have);
        Ok(true)
    }
}

/// The first bytes of `bytes`, escaped.
fn shown(bytes: &[u8]) -> String {
    const SHOWN: usize = 120;
    let mut text = bytes[..bytes.len().min(SHOWN)].escape_ascii().to_string();
    if bytes.len() > SHOWN {
        text.push_str("...");
    }
    text
}

/// What a set of requests came to: answers, errors and latencies.
#[derive(Debug, Clone)]
pub struct Tally {
    /// Right answers.
    pub completed: u64,
    /// Wrong answers, and requests never answered (a broken connection, a timeout).
    pub errors: u64,
    /// The first error's description.
    pub first_error: Option<String>,
    /// Latency of every answer, right or wrong, in microseconds.
    latency: Histogram<u64>,
}

impl Default for Tally {
    fn default() -> Self {
        Tally::new()
    }
}

impl Tally {
    /// Nothing yet.
    pub fn new() -> Tally {
        let ceiling = LATENCY_CEILING.as_micros() as u64;
        Tally {
            completed: 0,
            errors: 0,
            first_error: None,
            latency: Histogram::new_with_bounds(1, ceiling, LATENCY_DIGITS)
                .expect("valid histogram bounds"),
        }
    }

    /// An answer came `latency` after its request.
    pub fn answered(&mut self, verdict: Verdict, latency: Duration) {
        self.latency
            .saturating_record((latency.as_micros() as u64).max(1));
        match verdict {
            Verdict::Right => self.completed += 1,
            Verdict::Wrong(why) => self.failed(1, why),
        }
    }

    /// `count` requests failed because of `why`.
    pub fn failed(&mut self, count: u64, why: impl Display) {
        self.errors += count;
        if self.first_error.is_none() && count > 0 {
            self.first_error = Some(why.to_string());
        }
    }

    /// Adds `other` to this tally.
    pub fn merge(&mut self, other: &Tally) {
        self.completed += other.completed;
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
        self.errors += other.errors;
        self.latency
            .add(&other.latency)
            .expect("histograms of the same bounds add up");
    }

    /// The latency below which `quantile` (0 to 1) of the answers came, in milliseconds.
    pub fn quantile_ms(&self, quantile: f64) -> f64 {
        self.latency.value_at_quantile(quantile) as f64 / 1000.0
    }

    /// The longest latency, in milliseconds.
    pub fn max_ms(&self) -> f64 {
        self.latency.max() as f64 / 1000.0
    }
}

/// One measured round: what was done, and in how long.
#[derive(Debug)]
pub struct Round {
    /// Answers, errors, latencies.
    pub tally: Tally,
    /// From the start of the load to the last answer.
    pub elapsed: Duration,
}

impl Round {
    /// Right answers per second.
    pub fn rate(&self) -> f64 {
        self.tally.completed as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// The rounds of one side of a comparison, added up.
#[derive(Debug)]
pub struct Series {
    /// What was loaded (a row's first cell).
    pub label: String,
    total: Tally,
    elapsed: Duration,
    rates: Vec<f64>,
}

impl Series {
    /// No rounds yet.
    pub fn new(label: impl Into<String>) -> Series {
        Series {
            label: label.into(),
            total: Tally::new(),
            elapsed: Duration::ZERO,
            rates: Vec::new(),
        }
    }

    /// Adds a round.
    pub fn push(&mut self, round: &Round) {
        self.total.merge(&round.tally);
        self.elapsed += round.elapsed;
        self.rates.push(round.rate());
    }

    /// Right answers per second over every round.
    pub fn rate(&self) -> f64 {
        self.total.completed as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Everything the rounds recorded.
    pub fn total(&self) -> &Tally {
        &self.total
    }

    fn rounds_line(&self) -> String {
        let rates: Vec<String> = self.rates.iter().map(|r| format!("{r:.0}")).collect();
        format!("{}: {}", self.label, rates.join(", "))
    }
}

/// One round against `addr`: `connections` connections, each keeping `pipeline` requests of
/// `workload` in flight for `duration`, then waiting for the answers still due.
pub async fn measure_round(
    workload: &Arc<Exchanges>,
    addr: SocketAddr,
    connections: usize,
    pipeline: usize,
    duration: Duration,
) -> anyhow::Result<Round> {
    let mut streams = Vec::with_capacity(connections);
    for _ in 0..connections {
        streams.push(connect(addr).await?);
    }
    let start = Instant::now();
    let deadline = start + duration;
    let mut drivers = Vec::with_capacity(connections);
    for (connection, stream) in streams.into_iter().enumerate() {
        let workload = Arc::clone(workload);
        drivers.push(tokio::spawn(async move {
            drive(&workload, stream, connection, pipeline, deadline).await
        }));
    }
    let mut tally = Tally::new();
    let mut end = start;
    for driver in drivers {
        let (connection_tally, finished) = driver.await.context("a benchmark connection")?;
        tally.merge(&connection_tally);
        end = end.max(finished);
    }
    Ok(Round {
        tally,
        elapsed: end - start,
    })
}

/// A connection to `addr` with Nagle's algorithm off (the servers' sockets have it off too).
pub async fn connect(addr: SocketAddr) -> anyhow::Result<TcpStream> {
    let stream = timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .with_context(|| format!("connecting to {addr} took over {CONNECT_TIMEOUT:?}"))?
        .with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// A request in flight: which one, and when it was written.
type Pending = (usize, Instant);

/// One connection's closed loop; its tally and when its last answer came.
async fn drive(
    workload: &Exchanges,
    mut stream: TcpStream,
    connection: usize,
    pipeline: usize,
    deadline: Instant,
) -> (Tally, Instant) {
    let mut tally = Tally::new();
    let mut in_flight: VecDeque<Pending> = VecDeque::with_capacity(pipeline);
    let mut output = Vec::new();
    let mut input = BytesMut::with_capacity(READ_BUFFER);
    let mut sent = 0u64;
    loop {
        let now = Instant::now();
        while now < deadline && in_flight.len() < pipeline {
            let index = workload.pick(connection, sent);
            sent += 1;
            output.extend_from_slice(&workload.items[index].request);
            in_flight.push_back((index, now));
        }
        if in_flight.is_empty() {
            break;
        }
        if let Err(why) = exchange(&mut stream, &mut output, &mut input).await {
            tally.failed(in_flight.len() as u64, why);
            break;
        }
        let arrived = Instant::now();
        let taken = take_answers(workload, &mut in_flight, &mut input, |sent| {
            tally.answered(Verdict::Right, arrived - sent);
        });
        if let Err(why) = taken {
            tally.failed(in_flight.len() as u64, why);
            break;
        }
    }
    (tally, Instant::now())
}

/// Writes `output` (emptying it), then reads what has arrived into `input`.
async fn exchange(
    stream: &mut TcpStream,
    output: &mut Vec<u8>,
    input: &mut BytesMut,
) -> Result<(), String> {
    if !output.is_empty() {
        match timeout(ANSWER_TIMEOUT, stream.write_all(output)).await {
            Err(_) => return Err(format!("the server took no request for {ANSWER_TIMEOUT:?}")),
            Ok(Err(err)) => return Err(format!("writing a request: {err}")),
            Ok(Ok(())) => output.clear(),
        }
    }
    input.reserve(READ_BUFFER / 4);
    match timeout(ANSWER_TIMEOUT, stream.read_buf(input)).await {
        Err(_) => Err(format!("no answer within {ANSWER_TIMEOUT:?}")),
        Ok(Err(err)) => Err(format!("reading an answer: {err}")),
        Ok(Ok(0)) => Err("the server closed the connection".into()),
        Ok(Ok(_)) => Ok(()),
    }
}

/// Takes every whole answer at the front of `input`, handing its request's send time to
/// `answered`.
fn take_answers(
    workload: &Exchanges,
    in_flight: &mut VecDeque<Pending>,
    input: &mut BytesMut,
    mut answered: impl FnMut(Instant),
) -> Result<(), String> {
    while let Some(&(index, sent)) = in_flight.front() {
        if !workload.answer(index, input)? {
            break;
        }
        in_flight.pop_front();
        answered(sent);
    }
    Ok(())
}

/// Rounds against `target` (address, requests, label) alternating with rounds against the echo
/// server of `echo` (address, the same requests [`Exchanges::echoed`]), after a warm-up of each;
/// the echo's series first.
pub async fn compare(
    plan: &Plan,
    pipeline: usize,
    target: (SocketAddr, &Arc<Exchanges>, &str),
    echo: (SocketAddr, &Arc<Exchanges>),
) -> anyhow::Result<(Series, Series)> {
    let (target_addr, workload, label) = target;
    let (echo_addr, echo_workload) = echo;
    let mut echoed = Series::new("bare TCP echo");
    let mut served = Series::new(label);
    let run_echo = || {
        measure_round(
            echo_workload,
            echo_addr,
            plan.connections,
            pipeline,
            plan.duration,
        )
    };
    let run_target = || {
        measure_round(
            workload,
            target_addr,
            plan.connections,
            pipeline,
            plan.duration,
        )
    };
    if !plan.warmup.is_zero() {
        measure_round(
            echo_workload,
            echo_addr,
            plan.connections,
            pipeline,
            plan.warmup,
        )
        .await?;
        measure_round(
            workload,
            target_addr,
            plan.connections,
            pipeline,
            plan.warmup,
        )
        .await?;
    }
    for round in 0..plan.rounds {
        // Echo first in even rounds, the target first in odd ones.
        let (first, second) = if round % 2 == 0 {
            (run_echo().await?, run_target().await?)
        } else {
            let target_round = run_target().await?;
            (run_echo().await?, target_round)
        };
        echoed.push(&first);
        served.push(&second);
        progress(
            round,
            plan.rounds,
            pipeline,
            &[&first, &second],
            &[&echoed.label, label],
        );
    }
    Ok((echoed, served))
}

/// [`compare`] once per pipeline depth of `pipelines`, each adding the echo's row and the
/// target's (with its fraction of the echo's rate) to `report`.
pub async fn compare_into(
    report: &mut Report,
    plan: &Plan,
    pipelines: &[u32],
    target: (SocketAddr, &Arc<Exchanges>, &str),
    echo: (SocketAddr, &Arc<Exchanges>),
) -> anyhow::Result<()> {
    for &pipeline in pipelines {
        let (echoed, served) = compare(plan, pipeline as usize, target, echo).await?;
        let in_flight = pipeline.to_string();
        report.add(&echoed, plan.connections, &in_flight, None);
        report.add(&served, plan.connections, &in_flight, Some(&echoed));
    }
    Ok(())
}

/// Rounds against `addr` alone, after a warm-up.
pub async fn measure(
    plan: &Plan,
    pipeline: usize,
    addr: SocketAddr,
    workload: &Arc<Exchanges>,
    label: &str,
) -> anyhow::Result<Series> {
    if !plan.warmup.is_zero() {
        measure_round(workload, addr, plan.connections, pipeline, plan.warmup).await?;
    }
    let mut series = Series::new(label);
    for round in 0..plan.rounds {
        let measured =
            measure_round(workload, addr, plan.connections, pipeline, plan.duration).await?;
        series.push(&measured);
        progress(round, plan.rounds, pipeline, &[&measured], &[label]);
    }
    Ok(series)
}

/// A line on stderr after each round, so a long run shows it is alive.
pub fn progress(
    round: usize,
    rounds: usize,
    pipeline: usize,
    measured: &[&Round],
    labels: &[&str],
) {
    let parts: Vec<String> = measured
        .iter()
        .zip(labels)
        .map(|(round, label)| format!("{label} {:.0}/s", round.rate()))
        .collect();
    eprintln!(
        "round {}/{rounds}, {pipeline} in flight: {}",
        round + 1,
        parts.join(", ")
    );
}

/// The results table: one row per series, with its fraction of a reference series when the
/// table compares.
#[derive(Debug)]
pub struct Report {
    table: Table,
    compares: bool,
    notes: Vec<String>,
    errors: u64,
}

impl Report {
    /// A table whose client column is `clients` ("connections", "clients") and whose rate
    /// column is `rate` ("requests/s", "deliveries/s"), without a reference column.
    pub fn new(clients: &str, rate: &str) -> Report {
        Report::with_columns(clients, rate, false)
    }

    /// [`Report::new`] with a last column, "vs echo": a row's rate as a fraction of the
    /// reference it is added with.
    pub fn compared(clients: &str, rate: &str) -> Report {
        Report::with_columns(clients, rate, true)
    }

    fn with_columns(clients: &str, rate: &str, compares: bool) -> Report {
        let mut header = vec![
            "workload",
            clients,
            "in flight",
            rate,
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "max ms",
            "errors",
        ];
        if compares {
            header.push("vs echo");
        }
        Report {
            table: Table::new(&header),
            compares,
            notes: Vec::new(),
            errors: 0,
        }
    }

    /// A row for `series`, run with `clients` clients keeping `in_flight` requests each in
    /// flight; with `reference`, the fraction of its rate, and a note saying so.
    pub fn add(
        &mut self,
        series: &Series,
        clients: usize,
        in_flight: &str,
        reference: Option<&Series>,
    ) {
        let total = series.total();
        let ratio = reference.map(|reference| series.rate() / reference.rate().max(1e-9));
        let mut row = vec![
            series.label.clone(),
            clients.to_string(),
            in_flight.to_string(),
            format!("{:.0}", series.rate()),
            format!("{:.3}", total.quantile_ms(0.5)),
            format!("{:.3}", total.quantile_ms(0.99)),
            format!("{:.3}", total.quantile_ms(0.999)),
            format!("{:.3}", total.max_ms()),
            total.errors.to_string(),
        ];
        if self.compares {
            row.push(ratio.map_or_else(|| "-".to_string(), |r| format!("{r:.2}")));
        }
        self.table.push(row);
        self.notes.push(format!(
            "per round, {in_flight} in flight: {}",
            series.rounds_line()
        ));
        if let (Some(ratio), Some(reference)) = (ratio, reference) {
            self.notes.push(format!(
                "{} with {in_flight} in flight: {ratio:.2} of the {}'s rate",
                series.label, reference.label
            ));
        }
        if let Some(why) = &total.first_error {
            self.notes
                .push(format!("{}: first error: {why}", series.label));
        }
        self.errors += total.errors;
    }

    /// Adds a line under the table.
    pub fn note(&mut self, line: String) {
        self.notes.push(line);
    }

    /// Prints the table and the notes; exit status 1 if any request failed, 0 otherwise.
    pub fn print(&self) -> ExitCode {
        println!();
        print!("{}", self.table.render());
        println!();
        for note in &self.notes {
            println!("{note}");
        }
        if self.errors > 0 {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_checked() {
        assert_eq!(round_seconds("1.5"), Ok(Duration::from_millis(1500)));
        assert!(round_seconds("0.01").is_err());
        assert!(round_seconds("-1").is_err());
        assert!(round_seconds("soon").is_err());
        assert!(round_seconds("4000").is_err());
        assert_eq!(warmup_seconds("0"), Ok(Duration::ZERO));
        assert!(warmup_seconds("-0.5").is_err());
    }

    #[test]
    fn tallies_add_up_and_keep_the_first_error() {
        let mut one = Tally::new();
        one.answered(Verdict::Right, Duration::from_micros(100));
        one.answered(Verdict::Wrong("bad".into()), Duration::from_micros(300));
        let mut two = Tally::new();
        two.answered(Verdict::Right, Duration::from_millis(2));
        two.failed(3, "lost");
        one.merge(&two);
        assert_eq!((one.completed, one.errors, one.latency.len()), (2, 4, 3));
        assert_eq!(one.first_error.as_deref(), Some("bad"));
        assert!((one.max_ms() - 2.0).abs() < 0.01, "{}", one.max_ms());
        assert!((one.quantile_ms(0.5) - 0.3).abs() < 0.001);
    }

    #[test]
    fn series_rates_are_over_the_sum_of_the_rounds() {
        let mut series = Series::new("x");
        for (completed, millis) in [(100, 1000), (300, 1000)] {
            let mut tally = Tally::new();
            tally.completed = completed;
            series.push(&Round {
                tally,
                elapsed: Duration::from_millis(millis),
            });
        }
        assert!((series.rate() - 200.0).abs() < 1e-9);
        assert_eq!(series.rounds_line(), "x: 100, 300");
    }

    fn item(request: &str, answer: &str) -> Exchange {
        Exchange {
            what: format!("ask {request}"),
            request: request.as_bytes().to_vec(),
            answer: answer.as_bytes().to_vec(),
        }
    }

    #[test]
    fn requests_rotate_or_stay_with_their_connection() {
        let items = || (0..4).map(|n| item(&n.to_string(), "")).collect();
        let rotating = Exchanges::rotating(items());
        assert_eq!(rotating.pick(2, 3), 1);
        assert_eq!(rotating.pick(0, 0), 0);
        let own = Exchanges::one_per_connection(items());
        assert_eq!(own.pick(5, 9), 1);
        assert_eq!(own.pick(5, 10), 1);
    }

    #[test]
    fn answers_are_taken_whole_and_compared_byte_for_byte() {
        let exchanges = Exchanges::rotating(vec![item("Q", "Luke"), item("X", "Leia")]);
        let mut input = BytesMut::from(&b"Lu"[..]);
        assert_eq!(exchanges.answer(0, &mut input), Ok(false));
        assert_eq!(&input[..], b"Lu", "a partial answer stays");
        input.extend_from_slice(b"keLe");
        assert_eq!(exchanges.answer(0, &mut input), Ok(true));
        assert_eq!(&input[..], b"Le");
        input.extend_from_slice(b"ah");
        let why = exchanges.answer(1, &mut input).unwrap_err();
        assert_eq!(why, r#"ask X: expected "Leia", got "Leah""#);
        let echoed = exchanges.echoed();
        let mut echo = BytesMut::from(&b"X"[..]);
        assert_eq!(echoed.answer(1, &mut echo), Ok(true));
    }
}
