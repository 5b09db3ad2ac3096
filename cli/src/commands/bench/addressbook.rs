//! `cli bench addressbook`: the address book's lookups in a closed loop, next to a bare TCP echo
//! server moving the same bytes.
//!
//! Each connection asks for the seed's four e-mails in turn (`Q` + length + e-mail, encoded by
//! [`protocol::addressbook`]) and checks every answer is the owner's name, byte for byte (so a
//! server given `--server` must serve the seed's book, as `cli addressbook serve` does without
//! `--book`). Rounds against the
//! address book alternate with rounds against the echo server (see [`super::load`]); the report
//! gives requests per second, latency percentiles and errors of each, and the address book's rate
//! as a fraction of the echo's, once per `--pipeline` depth.

use std::process::ExitCode;
use std::sync::Arc;

use addressbook::book::SEED_ENTRIES;
use addressbook::{AddressBook, ServerConfig};
use anyhow::Context;
use clap::Args;
use protocol::addressbook::Message;

use super::echo;
use super::load::{Exchange, Exchanges, InProcessServer, LoadArgs, Report, compare_into};

/// Arguments of `cli bench addressbook`.
#[derive(Debug, Args)]
pub struct AddressbookBenchArgs {
    #[command(flatten)]
    load: LoadArgs,
    /// Queries each connection keeps in flight (1: no pipelining); a comma-separated list runs
    /// the comparison once per value.
    #[arg(long, value_name = "P", value_delimiter = ',', default_values_t = [1, 16], value_parser = clap::value_parser!(u32).range(1..=1024))]
    pipeline: Vec<u32>,
}

/// The seed's four e-mails as queries, each answered by its owner's name.
fn lookups() -> anyhow::Result<Exchanges> {
    let mut items = Vec::new();
    for (email, name) in SEED_ENTRIES {
        let query = Message::query(email).context("a seed e-mail fits a query")?;
        let answer = Message::response(name).context("a seed name fits a response")?;
        items.push(Exchange {
            what: format!("the owner of {email}"),
            request: query.to_bytes().to_vec(),
            answer: answer.to_bytes().to_vec(),
        });
    }
    Ok(Exchanges::rotating(items))
}

/// Runs the benchmark and prints its table; exit status 1 if any lookup failed.
pub fn run(args: AddressbookBenchArgs) -> anyhow::Result<ExitCode> {
    let plan = args.load.plan()?;
    let workload = Arc::new(lookups()?);
    let (echo, echoed) = echo::alongside(&workload)?;
    let target = plan.target(start_server)?;
    println!(
        "address book: {} connections asking for the seed's four e-mails in turn, next to a bare \
         TCP echo server on the same bytes; {}",
        plan.connections,
        plan.describe(&target, Some("side"))
    );
    let mut report = Report::compared("connections", "requests/s");
    let served = (target.addr(), &workload, "address book");
    plan.load_runtime()?.block_on(compare_into(
        &mut report,
        &plan,
        &args.pipeline,
        served,
        (echo.addr(), &echoed),
    ))?;
    target.stop()?;
    echo.stop()?;
    Ok(report.print())
}

/// The address book with the seed's entries and default settings, in-process.
fn start_server() -> anyhow::Result<InProcessServer> {
    InProcessServer::tcp("address book", |listener, shutdown| {
        addressbook::run(listener, ServerConfig::new(AddressBook::seed()), shutdown)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::bench::load::measure_round;
    use crate::commands::runtime;
    use std::time::Duration;

    #[test]
    fn every_lookup_gets_its_owner_from_the_server() {
        let server = start_server().unwrap();
        let workload = Arc::new(lookups().unwrap());
        let round = runtime()
            .unwrap()
            .block_on(measure_round(
                &workload,
                server.addr(),
                3,
                5,
                Duration::from_millis(200),
            ))
            .unwrap();
        assert_eq!(round.tally.errors, 0, "{:?}", round.tally.first_error);
        assert!(round.tally.completed >= 15, "{}", round.tally.completed);
        server.stop().unwrap();
    }
}
