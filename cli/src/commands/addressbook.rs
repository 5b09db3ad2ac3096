//! `cli addressbook serve` and `cli addressbook query`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use addressbook::client::check_email;
use addressbook::{AddressBook, Client, ClientError, Lookup, ServerConfig};
use clap::{Args, Subcommand};

use super::{runtime, status_line};
use crate::logging;
use crate::prompt::Prompter;
use crate::signals::StopSignals;

/// The address book's subcommands.
#[derive(Debug, Subcommand)]
pub enum AddressbookCommand {
    /// Serve the address book until Ctrl+C or SIGTERM.
    ///
    /// Without --book it answers the seed's four entries. One connection answers any number of
    /// queries; a client that breaks the protocol is answered `Error: Unknown message protocol`
    /// and disconnected. A connection over --max-connections is answered `Error: server busy`
    /// and closed.
    Serve(ServeArgs),
    /// Look e-mail addresses up.
    ///
    /// With e-mails as arguments: prints `<email> belongs to <name>` or `<email> was not found in
    /// the address book` for each, over one connection, and exits 0 when all were found, 1 when any
    /// was not, 2 on a connection or protocol error or when the server is busy. Without e-mails:
    /// the seed's interactive loop, which also reads from a pipe (an e-mail line, then a y/n line,
    /// and so on).
    Query(QueryArgs),
}

/// Arguments of `cli addressbook serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0 picks a free one; the chosen address is printed).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Book file replacing the seed entries: CSV lines `email,name`, or a JSON object
    /// {"email": "name"}. A bad entry stops start-up with its file and line.
    #[arg(long, value_name = "FILE")]
    book: Option<PathBuf>,
    /// Close a connection that sends no query for this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    idle_timeout: u64,
    /// Serve at most this many connections at once; one more is answered `Error: server busy`
    /// and closed.
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
}

/// Arguments of `cli addressbook query`.
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// E-mail addresses to look up; none starts the interactive loop.
    #[arg(value_name = "EMAIL")]
    emails: Vec<String>,
    /// The server's address.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8080")]
    server: String,
    /// Give up on connecting, or on an answer, after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    timeout: u64,
}

/// Runs an address-book subcommand.
pub fn run(command: AddressbookCommand) -> anyhow::Result<ExitCode> {
    match command {
        AddressbookCommand::Serve(args) => serve(args),
        AddressbookCommand::Query(args) => query(args),
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    logging::init("info");
    server_kit::fd_limit::raise_for_server();
    let book = match &args.book {
        Some(path) => AddressBook::load(path)?,
        None => AddressBook::seed(),
    };
    let mut config = ServerConfig::new(book);
    config.idle_timeout = Duration::from_secs(args.idle_timeout);
    config.max_connections = args.max_connections as usize;
    runtime()?.block_on(async {
        let signals = StopSignals::install()?;
        let listener = server_kit::listen(&args.host, args.port).await?;
        status_line(&format!(
            "Address book listening on {}",
            listener.local_addr()?
        ));
        status_line("Press Ctrl+C to quit.");
        addressbook::run(listener, config, signals.shutdown()).await?;
        Ok(ExitCode::SUCCESS)
    })
}

/// The line printed for an answer.
pub(crate) fn describe(email: &str, lookup: &Lookup) -> String {
    match lookup {
        Lookup::Found(name) => format!("{email} belongs to {name}"),
        Lookup::NotFound => format!("{email} was not found in the address book"),
    }
}

/// Exit status 0 when every e-mail was found, 1 otherwise.
fn exit_for(all_found: bool) -> ExitCode {
    if all_found {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn query(args: QueryArgs) -> anyhow::Result<ExitCode> {
    logging::init("warn");
    let reply_timeout = Duration::from_secs(args.timeout);
    if args.emails.is_empty() {
        return interactive(&args.server, reply_timeout);
    }
    for email in &args.emails {
        check_email(email)?;
    }
    let answers = runtime()?.block_on(async {
        let mut client = Client::connect(args.server.as_str(), reply_timeout).await?;
        client.lookup_all(&args.emails).await
    })?;
    for (email, lookup) in args.emails.iter().zip(&answers) {
        println!("{}", describe(email, lookup));
    }
    Ok(exit_for(answers.iter().all(|a| *a != Lookup::NotFound)))
}

/// The seed's loop: ask for an e-mail, answer, ask whether to search another.
fn interactive(server: &str, reply_timeout: Duration) -> anyhow::Result<ExitCode> {
    let rt = runtime()?;
    let mut session = Session::new(server, reply_timeout);
    let mut input = Prompter::new();
    let mut all_found = true;
    while let Some(email) = input.ask("Enter the email address you want to search: ")? {
        if email.is_empty() {
            continue;
        }
        if let Err(err) = check_email(&email) {
            eprintln!("{err}");
            continue;
        }
        let lookup = rt.block_on(session.lookup(&email))?;
        all_found &= lookup != Lookup::NotFound;
        println!("{}", describe(&email, &lookup));
        if !input.ask_yes_no("Do you want to search another email?[y/n] ")? {
            break;
        }
    }
    Ok(exit_for(all_found))
}

/// A connection made on first use and made again if the server dropped it while the user was
/// typing (it closes idle connections).
struct Session<'a> {
    server: &'a str,
    reply_timeout: Duration,
    client: Option<Client>,
}

impl<'a> Session<'a> {
    fn new(server: &'a str, reply_timeout: Duration) -> Self {
        Session {
            server,
            reply_timeout,
            client: None,
        }
    }

    async fn lookup(&mut self, email: &str) -> Result<Lookup, ClientError> {
        if let Some(client) = &mut self.client {
            match client.lookup(email).await {
                Err(err) if err.is_connection_lost() => self.client = None,
                answer => return answer,
            }
        }
        let client = self
            .client
            .insert(Client::connect(self.server, self.reply_timeout).await?);
        client.lookup(email).await
    }
}
