//! `cli bench ...`: throughput measurements over loopback, one subcommand per system measured,
//! each printing a Markdown table (ready to paste into the README).

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
}

/// Runs one benchmark.
pub fn run(command: BenchCommand) -> anyhow::Result<ExitCode> {
    logging::init("warn");
    match command {
        BenchCommand::Reliable(args) => reliable::run(args),
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
