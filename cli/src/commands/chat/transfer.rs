//! `cli chat transfer receive|send`: the same file over TCP and over plain UDP (seed 003, task
//! 3), and what each transport did with it: time, throughput, datagrams expected, received,
//! lost, reordered and duplicated, and whether the file arrived intact.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use chat_p2p::transfer::receive::{self, ReceivedFile, ReceiverConfig};
use chat_p2p::transfer::send::{self, FileOffer, SendConfig};
use chat_p2p::transfer::{MAX_DATAGRAM_PAYLOAD, Report, Transport};
use clap::{Args, Subcommand};
use tokio::sync::mpsc;

use crate::commands::bench::Table;
use crate::commands::{resolve, runtime, status_line};
use crate::logging;
use crate::progress::TransferBar;
use crate::signals::StopSignals;

/// The transfer subcommands.
#[derive(Debug, Subcommand)]
pub enum TransferCommand {
    /// Receive files over TCP and UDP on one port number and save them in a folder, until Ctrl+C
    /// or SIGTERM.
    ///
    /// Prints `Transfer receiver on HOST:PORT (TCP and UDP), saving to DIR`, then one line per
    /// transfer. A file is saved under its own name only when it arrived whole and its SHA-256
    /// matches; a UDP file with holes is kept, zero-filled, as NAME.incomplete, a whole file with
    /// the wrong checksum as NAME.damaged. Existing files are never replaced: the next free
    /// `STEM (n).EXT` is taken.
    Receive(ReceiveArgs),
    /// Send a file over TCP (the default), over plain UDP (--udp), or both (--compare), and
    /// print what the receiver got.
    ///
    /// Over UDP the file goes as sequence-numbered datagrams with no retransmission: what is
    /// lost stays lost, and the table shows it. Without --rate the sender goes as fast as its
    /// socket takes the datagrams, which on loopback overflows the receiver's socket buffer.
    /// Exits 0 whenever the receiver's report came back, even if datagrams were lost.
    Send(SendArgs),
}

/// Arguments of `cli chat transfer receive`.
#[derive(Debug, Args)]
pub struct ReceiveArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port for both TCP and UDP (0 picks one free for both; the chosen port is printed).
    #[arg(long)]
    port: u16,
    /// Folder to save received files in (created if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// The largest file accepted, in bytes (suffixes K, M, G: powers of 1024).
    #[arg(long, value_name = "BYTES", default_value = "1G", value_parser = parse_bytes)]
    max_size: u64,
    /// Transfers served at once; more are refused as busy.
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=1024))]
    max_transfers: u64,
    /// Milliseconds to wait for straggling datagrams after the sender's "done" or the latest
    /// datagram.
    #[arg(long, value_name = "MS", default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    grace: u64,
    /// Seconds a sender may stay silent before its transfer is given up.
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    timeout: u64,
    /// The UDP socket's receive buffer to ask for, in bytes (default: the system's; suffixes
    /// K, M, G).
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    udp_buffer: Option<u64>,
}

/// Which transport, as flags.
#[derive(Debug, Args)]
#[group(multiple = false)]
struct ModeArgs {
    /// Send over TCP (the default).
    #[arg(long)]
    tcp: bool,
    /// Send over plain UDP: sequence-numbered datagrams, no retransmission.
    #[arg(long)]
    udp: bool,
    /// Send over TCP, then over UDP, and print both rows side by side.
    #[arg(long)]
    compare: bool,
}

impl ModeArgs {
    fn transports(&self) -> &'static [Transport] {
        if self.compare {
            &[Transport::Tcp, Transport::Udp]
        } else if self.udp {
            &[Transport::Udp]
        } else {
            &[Transport::Tcp]
        }
    }
}

/// Arguments of `cli chat transfer send`.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// The file to send.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// The receiver, as HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    to: String,
    #[command(flatten)]
    mode: ModeArgs,
    /// Send at most this many bytes per second (suffixes K, M, G: powers of 1024); paces UDP
    /// so the receiver keeps up (default: as fast as the socket goes).
    #[arg(long, value_name = "BYTES_PER_SEC", value_parser = parse_bytes)]
    rate: Option<u64>,
    /// Bytes of file in each UDP datagram (a 13-byte header comes on top).
    #[arg(long, value_name = "BYTES", default_value_t = 1200, value_parser = clap::value_parser!(u64).range(1..=MAX_DATAGRAM_PAYLOAD as u64))]
    datagram_size: u64,
    /// Ask the receiver to save the file under this name instead of its own.
    #[arg(long = "as", value_name = "NAME")]
    name: Option<String>,
    /// Seconds to wait for the receiver to connect and answer (the final report gets at least
    /// 300: the receiver hashes and saves the file first).
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    timeout: u64,
}

/// Runs a transfer subcommand.
pub fn run(command: TransferCommand) -> anyhow::Result<ExitCode> {
    match command {
        TransferCommand::Receive(args) => {
            logging::init("info");
            runtime()?.block_on(receive(args))
        }
        TransferCommand::Send(args) => {
            logging::init("warn");
            runtime()?.block_on(send(args))
        }
    }
}

/// A byte count: digits with an optional K, M or G (powers of 1024).
fn parse_bytes(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let (digits, unit) = match trimmed.char_indices().last() {
        Some((at, c)) if c.is_ascii_alphabetic() => (&trimmed[..at], c.to_ascii_uppercase()),
        _ => (trimmed, 'B'),
    };
    let shift = match unit {
        'B' => 0,
        'K' => 10,
        'M' => 20,
        'G' => 30,
        _ => return Err(format!("{text:?}: the unit must be K, M or G")),
    };
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a byte count (digits, then K, M or G)"))?;
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

async fn receive(args: ReceiveArgs) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create the folder {}", args.out.display()))?;
    let config = receiver_config(&args)?;
    let signals = StopSignals::install()?;
    let addr = resolve((args.host.as_str(), args.port), &args.host).await?;
    let (tcp, udp) = receive::bind(addr)
        .await
        .with_context(|| format!("cannot listen on TCP and UDP {addr}"))?;
    status_line(&format!(
        "Transfer receiver on {} (TCP and UDP), saving to {}",
        tcp.local_addr()?,
        args.out.display()
    ));
    let (reports, mut received) = mpsc::channel(64);
    let mut server = tokio::spawn(receive::run(tcp, udp, config, reports, signals.shutdown()));
    let result = loop {
        tokio::select! {
            Some(file) = received.recv() => status_line(&describe_received(&file)),
            result = &mut server => break result,
        }
    };
    while let Ok(file) = received.try_recv() {
        status_line(&describe_received(&file));
    }
    result.context("the receiver stopped unexpectedly")??;
    status_line("Transfer receiver stopped.");
    Ok(ExitCode::SUCCESS)
}

fn receiver_config(args: &ReceiveArgs) -> anyhow::Result<ReceiverConfig> {
    let mut config = ReceiverConfig::new(&args.out);
    config.max_file_size = args.max_size;
    config.max_transfers = usize::try_from(args.max_transfers)?;
    config.grace = Duration::from_millis(args.grace);
    config.max_grace = config.max_grace.max(config.grace * 2);
    config.io_timeout = Duration::from_secs(args.timeout);
    config.udp_recv_buffer = args.udp_buffer.map(usize::try_from).transpose()?;
    Ok(config)
}

/// The receiver's line about one transfer.
fn describe_received(file: &ReceivedFile) -> String {
    let report = &file.report;
    let mut line = format!(
        "{} from {} over {}: {} bytes in {:.3} s ({:.1} MiB/s)",
        file.name,
        file.peer,
        report.transport,
        report.file_size,
        report.elapsed().as_secs_f64(),
        report.mib_per_second()
    );
    if report.transport == Transport::Udp {
        let counts = &report.datagrams;
        line.push_str(&format!(
            "; datagrams expected {}, received {}, lost {}, reordered {}, duplicated {}",
            counts.expected,
            counts.received,
            counts.lost(),
            counts.reordered,
            counts.duplicated
        ));
    }
    let intact = if report.intact {
        "intact"
    } else {
        "NOT intact"
    };
    line.push_str(&format!("; {intact}; saved as {}", report.saved_as));
    line
}

async fn send(args: SendArgs) -> anyhow::Result<ExitCode> {
    let to = resolve(args.to.as_str(), &args.to).await?;
    let offer = send::inspect(&args.file, args.name.as_deref()).await?;
    println!(
        "Sending {} ({} bytes, SHA-256 {}) to {to}",
        offer.name,
        offer.size,
        hex(&offer.sha256)
    );
    let mut reports = Vec::new();
    for &transport in args.mode.transports() {
        let config = sender_config(&args, transport)?;
        let report = send_one(&offer, to, &config).await?;
        reports.push(report);
    }
    print_reports(&reports, args.rate.is_some());
    Ok(ExitCode::SUCCESS)
}

fn sender_config(args: &SendArgs, transport: Transport) -> anyhow::Result<SendConfig> {
    let mut config = SendConfig::new(transport);
    config.datagram_payload = usize::try_from(args.datagram_size)?;
    config.rate = args.rate;
    config.io_timeout = Duration::from_secs(args.timeout);
    config.report_timeout = config.report_timeout.max(config.io_timeout);
    Ok(config)
}

async fn send_one(
    offer: &FileOffer,
    to: SocketAddr,
    config: &SendConfig,
) -> anyhow::Result<Report> {
    let transport = config.transport;
    let mut bar = TransferBar::new(&format!("{} over {transport}", offer.name));
    send::send(offer, to, config, |done, total| bar.update(done, total))
        .await
        .with_context(|| format!("sending {} over {transport} failed", offer.name))
}

/// Prints the reports as a table, one row per transport, then where each file was saved.
pub(crate) fn print_reports(reports: &[Report], paced: bool) {
    let mut table = Table::new(&[
        "transport",
        "seconds",
        "MiB/s",
        "datagrams expected",
        "received",
        "lost",
        "reordered",
        "duplicated",
        "intact",
    ]);
    for report in reports {
        table.push(row(report));
    }
    println!();
    print!("{}", table.render());
    println!();
    for report in reports {
        println!("{}", saved_line(report));
    }
    let lost: u32 = reports.iter().map(|report| report.datagrams.lost()).sum();
    if lost > 0 && !paced {
        println!(
            "UDP does not retransmit: {lost} datagrams never arrived. --rate paces the sending."
        );
    }
}

/// One table row: TCP has no datagrams, so its datagram columns show `-`.
fn row(report: &Report) -> Vec<String> {
    let counts = &report.datagrams;
    let udp = report.transport == Transport::Udp;
    let count = |n: u64| if udp { n.to_string() } else { "-".into() };
    vec![
        report.transport.to_string(),
        format!("{:.3}", report.elapsed().as_secs_f64()),
        format!("{:.1}", report.mib_per_second()),
        count(counts.expected.into()),
        count(counts.received.into()),
        count(counts.lost().into()),
        count(counts.reordered),
        count(counts.duplicated),
        if report.intact { "yes" } else { "no" }.into(),
    ]
}

fn saved_line(report: &Report) -> String {
    let mut line = format!("{}: saved as {}", report.transport, report.saved_as);
    if !report.is_complete() {
        line.push_str(&format!(
            " ({} of {} bytes arrived; the holes are zero-filled)",
            report.bytes_received, report.file_size
        ));
    } else if !report.intact {
        line.push_str(" (every byte arrived, but the SHA-256 does not match)");
    }
    if report.datagrams.invalid > 0 {
        line.push_str(&format!(
            "; {} invalid datagrams ignored",
            report.datagrams.invalid
        ));
    }
    line
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts_take_binary_suffixes() {
        assert_eq!(parse_bytes("1200"), Ok(1200));
        assert_eq!(parse_bytes("2K"), Ok(2048));
        assert_eq!(parse_bytes("3m"), Ok(3 << 20));
        assert_eq!(parse_bytes("1G"), Ok(1 << 30));
        assert!(parse_bytes("1T").unwrap_err().contains("K, M or G"));
        assert!(parse_bytes("fast").is_err());
        assert!(parse_bytes("").is_err());
        assert!(
            parse_bytes("99999999999G")
                .unwrap_err()
                .contains("too large")
        );
    }
}
