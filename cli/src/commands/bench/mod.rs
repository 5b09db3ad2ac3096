//! `cli bench ...`: throughput measurements over loopback, one subcommand per system measured,
//! each printing a Markdown table (ready to paste into the README).

pub mod addressbook;
pub mod chat;
pub mod echo;
pub mod forum;
pub mod idle;
pub mod load;
pub mod record;
pub mod reliable;

use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;

use crate::logging;

/// What to measure.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// The reliable-datagram layer against TCP: the same bytes over loopback, with no loss and
    /// with simulated loss.
    ///
    /// Transfers --mib MiB as --message-size messages through the reliable layer (client to
    /// listener over UDP on 127.0.0.1), again through an in-process relay that drops --loss
    /// percent of the datagrams both ways, then over one TCP connection; each --runs times. Prints
    /// the median run of each: throughput, time, the datagrams each side sent (data one way,
    /// mostly acks the other), retransmissions and the sender's smoothed RTT. Build with
    /// --release for meaningful figures.
    Reliable(reliable::ReliableBenchArgs),
    /// Address-book lookups (seed 002) in a closed loop, next to a bare TCP echo server.
    ///
    /// Starts the address book in-process on 127.0.0.1 (or loads --server, which must serve the
    /// seed's book) and a bare TCP echo server, each on a tokio runtime of its own, apart from
    /// the load generator's. --connections connections each keep --pipeline queries in flight
    /// (the seed's four e-mails in turn), writing a new one for every answer, and check every
    /// answer byte for byte. Rounds of --duration seconds against the address book alternate
    /// with rounds against the echo server sending the same bytes, after --warmup seconds of
    /// each. Prints requests per second, latency percentiles (HdrHistogram, request written to
    /// answer read), the slowest answer and errors of each side, and the address book's rate as
    /// a fraction of the echo's; once per --pipeline value. Exit status 1 if any request failed.
    /// Build with --release for meaningful figures.
    Addressbook(addressbook::AddressbookBenchArgs),
    /// Record-server reads next to a bare TCP echo server, then durable writes (seed 000).
    ///
    /// Starts the record server in-process with its data in a fresh temporary folder (or
    /// --data-dir, or loads --server) and writes one record per connection (bench-0,
    /// bench-1, ...). Reads: --connections connections each keep --pipeline reads in flight,
    /// checked byte for byte; their rounds alternate with rounds of a bare TCP echo server on
    /// the same bytes, as in `bench addressbook`, and the read rate is given as a fraction of
    /// the echo's. Writes: each connection rewrites its own record, every write flushed to disk
    /// (fsync) before its answer, reported on their own rows. Exit status 1 if any request
    /// failed.
    Record(record::RecordBenchArgs),
    /// The chat room's fan-out (seed 003): deliveries per second, 100 clients talking at once.
    ///
    /// Starts the room in-process (or loads --server) and joins --connections clients (default
    /// 100), each sending and receiving. A client keeps at most --pipeline messages of its own
    /// undelivered (a message is delivered once every other client has it), so every client
    /// talks at the pace the room relays. Receivers check each sender's messages arrive in
    /// order, once each. Prints deliveries per second (one message to one client), delivery
    /// latency percentiles (sent to received), deliveries missing at the end of a round (errors)
    /// and messages sent per second. Exit status 1 if any delivery failed.
    Chat(chat::ChatBenchArgs),
    /// Forum commands over UDP on the reliable-datagram layer (seed 001), with and without loss.
    ///
    /// Starts the forum in-process over UDP (or loads --server, its UDP address). For each
    /// --loss level (default 0 and 5 percent) --connections clients (default 50) connect, each
    /// through a relay of its own dropping that share of datagrams both ways (directly at 0),
    /// log in as new users and create a thread each. Each client then repeats --command (RDT of
    /// its thread by default) with one command in flight; rounds of the levels alternate.
    /// Prints commands per second, latency percentiles and errors per level, with the
    /// retransmissions and the datagrams the relays dropped. Exit status 1 if any command
    /// failed.
    Forum(forum::ForumBenchArgs),
    /// Many idle connections on the chat room or the address book: refusals and memory.
    Idle(idle::IdleBenchArgs),
}

/// Runs one benchmark.
pub fn run(command: BenchCommand) -> anyhow::Result<ExitCode> {
    logging::init("warn");
    match command {
        BenchCommand::Reliable(args) => reliable::run(args),
        BenchCommand::Addressbook(args) => addressbook::run(args),
        BenchCommand::Record(args) => record::run(args),
        BenchCommand::Chat(args) => chat::run(args),
        BenchCommand::Forum(args) => forum::run(args),
        BenchCommand::Idle(args) => idle::run(args),
    }
}

/// A Markdown table, columns padded to their widest cell.
#[derive(Debug)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(ToString::to_string).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (one cell per column).
    pub fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    /// The table as Markdown lines.
    pub fn render(&self) -> String {
        let widths: Vec<usize> = (0..self.header.len())
            .map(|c| {
                let cells = std::iter::once(&self.header).chain(&self.rows);
                cells
                    .map(|row| row.get(c).map_or(0, |cell| cell.chars().count()))
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: &[String]| {
            let padded: Vec<String> = widths
                .iter()
                .enumerate()
                .map(|(c, &width)| format!("{:width$}", cells.get(c).map_or("", String::as_str)))
                .collect();
            format!("| {} |\n", padded.join(" | "))
        };
        let rule: Vec<String> = widths.iter().map(|&w| "-".repeat(w)).collect();
        let mut text = line(&self.header);
        text.push_str(&line(&rule));
        for row in &self.rows {
            text.push_str(&line(row));
        }
        text
    }
}

/// Throughput in MiB/s of `bytes` moved in `elapsed`.
pub fn mib_per_second(bytes: usize, elapsed: Duration) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / elapsed.as_secs_f64().max(1e-9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_pad_every_column_to_its_widest_cell() {
        let mut table = Table::new(&["transport", "MiB/s"]);
        table.push(vec!["TCP".into(), "1234.5".into()]);
        assert_eq!(
            table.render(),
            "| transport | MiB/s  |\n| --------- | ------ |\n| TCP       | 1234.5 |\n"
        );
    }

    #[test]
    fn widths_count_characters_not_bytes() {
        let mut table = Table::new(&["µs"]);
        table.push(vec!["1".into()]);
        assert_eq!(table.render(), "| µs |\n| -- |\n| 1  |\n");
    }

    #[test]
    fn throughput_is_mebibytes_per_second() {
        let rate = mib_per_second(64 * 1024 * 1024, Duration::from_secs(2));
        assert!((rate - 32.0).abs() < 1e-9);
    }
}
