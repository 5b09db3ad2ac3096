//! `cli bench record`: the record server's reads in a closed loop next to a bare TCP echo server
//! moving the same bytes, then its durable writes on their own.
//!
//! Before measuring, one client writes a record for each connection (`bench-0`, `bench-1`, ...)
//! and reads each back, so every answer is known byte for byte: a read is answered by
//! `{"client_id": "bench-3", "type": 1, "data": "<the record>"}`, a write by the seed's
//! `File updated successfully.` (requests and answers encoded by [`protocol::record`]).
//!
//! - Reads: each connection reads the records in turn; rounds alternate with the echo server's
//!   (see [`super::load`]), and the report gives the read rate as a fraction of the echo's.
//! - Writes: each connection rewrites its own record again and again. Every write replaces the
//!   record's file and the record file (`records.json`) atomically, each flushed to disk (fsync)
//!   before the answer, so these rows measure the disk as much as the server; they are reported
//!   on their own, with no echo to compare with. The in-process server keeps its data in a fresh
//!   folder of the system's temporary folder unless `--data-dir` names one: the figures are only
//!   as durable as that folder's file system.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use protocol::record::{Request, RequestKind, Response, WRITE_OK};
use record_server::timestamp::Timestamp;
use record_server::{RecordClient, ServerConfig, StudentRecord};

use super::echo;
use super::load::{
    CONNECT_TIMEOUT, Exchange, Exchanges, InProcessServer, LoadArgs, Plan, Report, compare_into,
    measure,
};
use crate::commands::scratch::ScratchDir;

/// Connections the in-process server accepts beyond the benchmark's, so that one closing
/// (the set-up client's) is never mistaken for a full server.
const CONNECTION_SLACK: usize = 8;

/// Arguments of `cli bench record`.
#[derive(Debug, Args)]
pub struct RecordBenchArgs {
    #[command(flatten)]
    load: LoadArgs,
    /// Requests each connection keeps in flight (1: no pipelining); a comma-separated list runs
    /// the measurements once per value.
    #[arg(long, value_name = "P", value_delimiter = ',', default_values_t = [1], value_parser = clap::value_parser!(u32).range(1..=1024))]
    pipeline: Vec<u32>,
    /// Measure only the reads (next to the echo) or only the durable writes; both by default.
    #[arg(long, value_enum)]
    only: Option<Part>,
    /// Keep the in-process server's records in DIR (kept afterwards) rather than in a fresh
    /// folder of the system's temporary folder (removed afterwards).
    #[arg(long, value_name = "DIR", conflicts_with = "server")]
    data_dir: Option<PathBuf>,
}

/// One half of the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Part {
    /// Reads, next to the echo server.
    Reads,
    /// Durable writes, on their own.
    Writes,
}

/// A benchmark record as stored: its id and the record the server answers a read with.
struct Stored {
    id: String,
    /// What a write sends.
    written: String,
    /// What a read returns (the server's own timestamp line first).
    read: String,
}

/// Runs the benchmark and prints its table; exit status 1 if any request failed.
pub fn run(args: RecordBenchArgs) -> anyhow::Result<ExitCode> {
    let plan = args.load.plan()?;
    let (folder, _scratch) = data_folder(&args, &plan)?;
    let target = plan.target(|| start_server(folder.as_deref(), plan.connections))?;
    let load = plan.load_runtime()?;
    let records = load.block_on(prepare(target.addr(), plan.connections))?;
    let stored_in =
        folder.map_or_else(String::new, |dir| format!("; records in {}", dir.display()));
    println!(
        "record server: {} connections, one record each; {}{stored_in}",
        plan.connections,
        plan.describe(&target, Some("side"))
    );
    let mut report = Report::compared("connections", "requests/s");
    if args.only != Some(Part::Writes) {
        let reads = Arc::new(reads(&records)?);
        let (echo, echoed) = echo::alongside(&reads)?;
        let served = (target.addr(), &reads, "record reads");
        let echo_side = (echo.addr(), &echoed);
        let compared = compare_into(&mut report, &plan, &args.pipeline, served, echo_side);
        load.block_on(compared)?;
        echo.stop()?;
    }
    if args.only != Some(Part::Reads) {
        let writes = Arc::new(writes(&records)?);
        let measured = measure_writes(&mut report, &plan, &args.pipeline, target.addr(), &writes);
        load.block_on(measured)?;
    }
    target.stop()?;
    Ok(report.print())
}

/// Where an in-process server keeps its records: `--data-dir`, or a scratch folder (returned
/// too, to be removed when dropped); none for a running server.
fn data_folder(
    args: &RecordBenchArgs,
    plan: &Plan,
) -> anyhow::Result<(Option<PathBuf>, Option<ScratchDir>)> {
    if plan.server.is_some() {
        return Ok((None, None));
    }
    if let Some(folder) = &args.data_dir {
        return Ok((Some(folder.clone()), None));
    }
    let scratch = ScratchDir::new("record")?;
    Ok((Some(scratch.path().to_owned()), Some(scratch)))
}

/// The write rows: one series per pipeline depth, with no reference.
async fn measure_writes(
    report: &mut Report,
    plan: &Plan,
    pipelines: &[u32],
    addr: SocketAddr,
    writes: &Arc<Exchanges>,
) -> anyhow::Result<()> {
    for &pipeline in pipelines {
        let label = "record writes (fsync)";
        let series = measure(plan, pipeline as usize, addr, writes, label).await?;
        report.add(&series, plan.connections, &pipeline.to_string(), None);
    }
    Ok(())
}

/// The record server on its defaults, with its data in `folder`, in-process.
fn start_server(folder: Option<&Path>, connections: usize) -> anyhow::Result<InProcessServer> {
    let folder = folder.context("an in-process record server needs a data folder")?;
    let (mut config, _repairs) = ServerConfig::open_in(folder)
        .with_context(|| format!("cannot open the records in {}", folder.display()))?;
    config.max_connections = config.max_connections.max(connections + CONNECTION_SLACK);
    InProcessServer::tcp("record", move |listener, shutdown| {
        record_server::run(listener, config, shutdown)
    })
}

/// Writes the record of each of `count` ids and reads it back.
async fn prepare(addr: SocketAddr, count: usize) -> anyhow::Result<Vec<Stored>> {
    let mut client = RecordClient::connect(addr, CONNECT_TIMEOUT).await?;
    let mut records = Vec::with_capacity(count);
    for n in 0..count {
        let id = format!("bench-{n}");
        let written = StudentRecord {
            id: id.clone(),
            name: format!("Bench Mark {n}"),
            date_of_birth: "2000-01-01".into(),
            city: "Loopback".into(),
            reason: "Measuring the server".into(),
        }
        .to_data(Timestamp::now());
        client
            .write(&id, &written)
            .await
            .with_context(|| format!("writing record {id} before the benchmark"))?;
        let Some(read) = client.read(&id).await? else {
            bail!("the server has no record {id} right after writing it");
        };
        records.push(Stored { id, written, read });
    }
    Ok(records)
}

/// Reads of every record, each answered by the record as it was read back.
fn reads(records: &[Stored]) -> anyhow::Result<Exchanges> {
    let items = records
        .iter()
        .map(|record| {
            let request = Request::new(record.id.as_str(), RequestKind::Read, "");
            let answer = Response::success(record.id.as_str(), record.read.as_str());
            exchange(format!("read {}", record.id), &request, &answer)
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(Exchanges::rotating(items))
}

/// Writes of every record, each answered by the seed's confirmation.
fn writes(records: &[Stored]) -> anyhow::Result<Exchanges> {
    let items = records
        .iter()
        .map(|record| {
            let request = Request::new(
                record.id.as_str(),
                RequestKind::Write,
                record.written.as_str(),
            );
            let answer = Response::success(record.id.as_str(), WRITE_OK);
            exchange(format!("write {}", record.id), &request, &answer)
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(Exchanges::one_per_connection(items))
}

fn exchange(what: String, request: &Request, answer: &Response) -> anyhow::Result<Exchange> {
    Ok(Exchange {
        what,
        request: request.to_bytes()?,
        answer: answer.to_bytes()?.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::bench::load::measure_round;
    use crate::commands::runtime;
    use std::time::Duration;

    #[test]
    fn reads_and_writes_get_the_answers_prepared_for_them() {
        let scratch = ScratchDir::new("record-test").unwrap();
        let server = start_server(Some(scratch.path()), 3).unwrap();
        let load = runtime().unwrap();
        let records = load.block_on(prepare(server.addr(), 3)).unwrap();
        assert!(
            records[2].read.contains("Student ID: bench-2"),
            "{}",
            records[2].read
        );
        for workload in [reads(&records).unwrap(), writes(&records).unwrap()] {
            let round = load
                .block_on(measure_round(
                    &Arc::new(workload),
                    server.addr(),
                    3,
                    2,
                    Duration::from_millis(200),
                ))
                .unwrap();
            assert_eq!(round.tally.errors, 0, "{:?}", round.tally.first_error);
            assert!(round.tally.completed >= 6, "{}", round.tally.completed);
        }
        server.stop().unwrap();
        assert!(scratch.path().join("data/bench-1.txt").exists());
    }
}
