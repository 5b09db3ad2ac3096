//! `cli bench reliable`: the reliable-datagram layer's throughput over loopback, directly with no
//! loss and through a relay that drops a share of the datagrams (`--loss`, which may be 0: then
//! the row shows what the relay's extra hop costs), next to TCP moving the same bytes in the same
//! run.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use clap::Args;
use protocol::reliable::{Config, HEADER_LEN, Stats};
use server_kit::lossy_relay::LossyRelay;
use server_kit::reliable_udp::{ReliableConnection, ReliableListener};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::time::{Instant, timeout};

use super::{Table, mib_per_second};
use crate::commands::runtime;

/// The largest UDP payload over IPv4.
const MAX_DATAGRAM: usize = 65_507;
/// How long one transfer may take before the benchmark gives up on it.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(600);
/// The most bytes a warm-up transfer moves.
const WARM_UP_BYTES: usize = 16 * 1024 * 1024;
const LOOPBACK: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

/// Arguments of `cli bench reliable`.
#[derive(Debug, Args)]
pub struct ReliableBenchArgs {
    /// MiB to transfer in each run.
    #[arg(long, value_name = "MIB", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4096))]
    mib: u64,
    /// Bytes per message.
    #[arg(long, value_name = "BYTES", default_value_t = 64 * 1024, value_parser = clap::value_parser!(u64).range(1..=64 * 1024 * 1024))]
    message_size: u64,
    /// The largest datagram, header included: 1200 is safe on any path; loopback takes up to
    /// 65507.
    #[arg(long, value_name = "BYTES", default_value_t = 1200, value_parser = clap::value_parser!(u64).range(HEADER_LEN as u64 + 1..=MAX_DATAGRAM as u64))]
    datagram_size: u64,
    /// Packets in flight at most (the layer's `max_in_flight`; the layer may allow fewer).
    #[arg(long, value_name = "PACKETS", default_value_t = Config::default().max_in_flight as u64, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    window: u64,
    /// Percent of datagrams the relay drops, both ways, in the run through it (0 shows what the
    /// relay itself costs).
    #[arg(long, value_name = "PERCENT", default_value_t = 5.0)]
    loss: f64,
    /// Seed of the relay's choice of datagrams to drop.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Transfers per transport; the table shows the median one.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=100))]
    runs: u64,
}

/// What one run does.
#[derive(Debug, Clone)]
struct Plan {
    total: usize,
    message_size: usize,
    config: Config,
    loss: f64,
    seed: u64,
    runs: usize,
}

impl Plan {
    fn new(args: &ReliableBenchArgs) -> anyhow::Result<Plan> {
        ensure!(
            (0.0..100.0).contains(&args.loss),
            "--loss must be at least 0 and below 100 (percent), not {}",
            args.loss
        );
        let message_size = usize::try_from(args.message_size)?;
        let datagram_size = usize::try_from(args.datagram_size)?;
        let fragments = message_size.div_ceil(datagram_size - HEADER_LEN);
        ensure!(
            fragments <= usize::from(u16::MAX),
            "a message of {message_size} bytes would take {fragments} datagrams of {datagram_size} bytes; the limit is 65535"
        );
        let defaults = Config::default();
        let config = Config {
            max_datagram_size: datagram_size,
            max_message_size: message_size.max(defaults.max_message_size),
            max_in_flight: usize::try_from(args.window)?,
            ..defaults
        };
        Ok(Plan {
            total: usize::try_from(args.mib)? * 1024 * 1024,
            message_size,
            config,
            loss: args.loss / 100.0,
            seed: args.seed,
            runs: usize::try_from(args.runs)?,
        })
    }

    /// The messages of one run: full ones, then the remainder.
    fn messages(&self) -> impl Iterator<Item = Bytes> + use<> {
        let payload = Bytes::from(vec![0xA5; self.message_size]);
        let (total, size) = (self.total, self.message_size);
        (0..total.div_ceil(size)).map(move |i| payload.slice(..size.min(total - i * size)))
    }
}

/// The outcome of one transfer.
#[derive(Debug)]
struct Measurement {
    transport: &'static str,
    /// "direct", or "relay" through the lossy relay.
    path: &'static str,
    loss: f64,
    elapsed: Duration,
    /// Datagrams sent by the sender and by the receiver (UDP only).
    datagrams: Option<(u64, u64)>,
    retransmissions: Option<u64>,
    /// The sender's smoothed round-trip time at the end (UDP only).
    rtt: Option<Duration>,
}

impl Measurement {
    fn row(&self, bytes: usize) -> Vec<String> {
        let count = |n: Option<u64>| n.map_or_else(|| "-".to_string(), |n| n.to_string());
        vec![
            self.transport.to_string(),
            self.path.to_string(),
            format!("{}%", (self.loss * 1000.0).round() / 10.0),
            format!("{:.1}", mib_per_second(bytes, self.elapsed)),
            format!("{:.3}", self.elapsed.as_secs_f64()),
            count(self.datagrams.map(|(out, _)| out)),
            count(self.datagrams.map(|(_, back)| back)),
            count(self.retransmissions),
            self.rtt
                .map_or_else(|| "-".to_string(), |rtt| rtt.as_micros().to_string()),
        ]
    }
}

/// Runs the benchmark and prints its table.
pub fn run(args: ReliableBenchArgs) -> anyhow::Result<ExitCode> {
    let plan = Plan::new(&args)?;
    println!(
        "{} MiB as {} messages of up to {} bytes over 127.0.0.1; datagrams of at most {} bytes, \
         at most {} in flight; the median of {} runs each",
        args.mib,
        plan.messages().count(),
        plan.message_size,
        plan.config.max_datagram_size,
        plan.config.max_in_flight,
        plan.runs
    );
    let measurements = runtime()?.block_on(measure_all(&plan))?;
    let mut table = Table::new(&[
        "transport",
        "path",
        "loss",
        "MiB/s",
        "seconds",
        "datagrams sent",
        "datagrams back",
        "retransmissions",
        "RTT µs",
    ]);
    for measurement in &measurements {
        table.push(measurement.row(plan.total));
    }
    println!();
    print!("{}", table.render());
    let [lossless, _, tcp] = &measurements[..] else {
        unreachable!("three runs")
    };
    println!(
        "\nreliable UDP at 0% loss: {:.0}% of TCP's throughput",
        100.0 * tcp.elapsed.as_secs_f64() / lossless.elapsed.as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

/// The median transfer of each transport. After an untimed warm-up transfer of each (the first
/// transfer of a process is the slowest, for TCP especially), the transfers run in rounds, one
/// of each transport per round, so that whatever else the machine does weighs on all alike.
async fn measure_all(plan: &Plan) -> anyhow::Result<Vec<Measurement>> {
    let warm_up = Plan {
        total: plan.total.min(WARM_UP_BYTES),
        ..plan.clone()
    };
    within_limit(reliable(&warm_up, None)).await?;
    within_limit(tcp(&warm_up)).await?;
    let mut runs: [Vec<Measurement>; 3] = Default::default();
    for _ in 0..plan.runs {
        runs[0].push(within_limit(reliable(plan, None)).await?);
        runs[1].push(within_limit(reliable(plan, Some(plan.loss))).await?);
        runs[2].push(within_limit(tcp(plan)).await?);
    }
    Ok(runs.into_iter().map(median).collect())
}

/// `transfer`, unless it takes over [`TRANSFER_TIMEOUT`].
async fn within_limit(
    transfer: impl Future<Output = anyhow::Result<Measurement>>,
) -> anyhow::Result<Measurement> {
    timeout(TRANSFER_TIMEOUT, transfer)
        .await
        .with_context(|| format!("a transfer took over {TRANSFER_TIMEOUT:?}"))?
}

/// The median of `measurements` by time.
fn median(mut measurements: Vec<Measurement>) -> Measurement {
    measurements.sort_by_key(|m| m.elapsed);
    let middle = measurements.len() / 2;
    measurements.swap_remove(middle)
}

/// One transfer through the reliable layer: directly, or through a relay dropping `loss` of the
/// datagrams if `loss` is given (even 0).
async fn reliable(plan: &Plan, loss: Option<f64>) -> anyhow::Result<Measurement> {
    let socket = UdpSocket::bind(LOOPBACK).await?;
    let mut listener = ReliableListener::bind(socket, plan.config.clone(), 1)?;
    let relay = match loss {
        Some(loss) => Some(LossyRelay::start(listener.local_addr(), loss, plan.seed).await?),
        None => None,
    };
    let target = relay
        .as_ref()
        .map_or(listener.local_addr(), LossyRelay::local_addr);
    let total = plan.total;
    let receiver = tokio::spawn(async move {
        let mut connection = listener.accept().await.context("the listener stopped")?;
        let received = receive_all(&mut connection, total).await?;
        anyhow::Ok((received, connection))
    });
    let socket = UdpSocket::bind(LOOPBACK).await?;
    let mut client = ReliableConnection::connect(socket, target, plan.config.clone()).await?;
    let start = Instant::now();
    for message in plan.messages() {
        client.send(message).await?;
    }
    let (received, server) = receiver.await??;
    let (sent, back) = (client.stats(), server.stats());
    client
        .close()
        .await
        .context("closing the benchmark's connection")?;
    Ok(Measurement {
        transport: "reliable UDP",
        path: if relay.is_some() { "relay" } else { "direct" },
        loss: loss.unwrap_or(0.0),
        elapsed: received - start,
        datagrams: Some((sent.datagrams_sent, back.datagrams_sent)),
        retransmissions: Some(retransmissions(&sent, &back)),
        rtt: sent.rtt,
    })
}

/// Takes messages until `total` bytes have arrived; returns when the last did.
async fn receive_all(connection: &mut ReliableConnection, total: usize) -> anyhow::Result<Instant> {
    let mut received = 0;
    while received < total {
        let Some(message) = connection.recv().await else {
            bail!(
                "the connection ended after {received} of {total} bytes: {:?}",
                connection.ended()
            );
        };
        received += message.len();
    }
    Ok(Instant::now())
}

fn retransmissions(sent: &Stats, back: &Stats) -> u64 {
    sent.retransmissions + back.retransmissions
}

/// The same bytes over one TCP connection.
async fn tcp(plan: &Plan) -> anyhow::Result<Measurement> {
    let listener = TcpListener::bind(LOOPBACK).await?;
    let addr = listener.local_addr()?;
    let total = plan.total;
    let receiver = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await?;
        let mut buffer = vec![0; 256 * 1024];
        let mut received = 0;
        while received < total {
            match stream.read(&mut buffer).await? {
                0 => bail!("TCP connection closed after {received} of {total} bytes"),
                n => received += n,
            }
        }
        anyhow::Ok(Instant::now())
    });
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let start = Instant::now();
    for message in plan.messages() {
        stream.write_all(&message).await?;
    }
    let received = receiver.await??;
    Ok(Measurement {
        transport: "TCP",
        path: "direct",
        loss: 0.0,
        elapsed: received - start,
        datagrams: None,
        retransmissions: None,
        rtt: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: ReliableBenchArgs,
    }

    fn plan(args: &[&str]) -> anyhow::Result<Plan> {
        let cli = Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied()))?;
        Plan::new(&cli.args)
    }

    #[test]
    fn messages_add_up_to_the_total_with_a_short_last_one() {
        let plan = plan(&["--mib", "1", "--message-size", "300000"]).unwrap();
        let sizes: Vec<usize> = plan.messages().map(|m| m.len()).collect();
        assert_eq!(sizes, [300_000, 300_000, 300_000, 148_576]);
        assert_eq!(plan.config.max_message_size, 1024 * 1024);
    }

    #[test]
    fn impossible_settings_are_refused() {
        assert!(plan(&["--loss", "100"]).is_err());
        assert!(plan(&["--datagram-size", "32"]).is_err());
        assert!(plan(&["--datagram-size", "33", "--message-size", "100000"]).is_err());
    }

    #[test]
    fn a_small_run_measures_all_three_transports() {
        let plan = plan(&["--mib", "1", "--loss", "5", "--runs", "1"]).unwrap();
        let measurements = runtime().unwrap().block_on(measure_all(&plan)).unwrap();
        let transports: Vec<_> = measurements.iter().map(|m| m.transport).collect();
        assert_eq!(transports, ["reliable UDP", "reliable UDP", "TCP"]);
        let paths: Vec<_> = measurements.iter().map(|m| m.path).collect();
        assert_eq!(paths, ["direct", "relay", "direct"]);
        let (sent, _) = measurements[0].datagrams.unwrap();
        assert!(sent >= 1024 * 1024 / 1168, "{sent} datagrams");
        assert!(measurements[1].retransmissions.unwrap() > 0);
    }
}
