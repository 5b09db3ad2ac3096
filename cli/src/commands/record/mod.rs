//! `cli record ...`: clients of the record server (seed 000), the seed's interactive menu and
//! one-shot commands for scripts.

mod menu;
mod session;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use protocol::record::READ_MISS;
use record_server::{ClientError, RecordId, ServerStatus, StudentRecord};

use super::runtime;
use crate::logging;
use session::Session;

/// The record client's subcommands.
#[derive(Debug, Subcommand)]
pub enum RecordCommand {
    /// The seed's interactive client: 1 writes your record, 2 reads it back into <id>.txt in the
    /// current folder, 3 exits.
    ///
    /// Asks for the server's host and port unless given. Prompts appear only on a terminal, so
    /// a script can pipe the answers in (`1`, id, name, date of birth, city, reason, `2`, id,
    /// `3`) and read just the server's answers; end of input exits. Exits 0, or 1 if the server
    /// refused any request, or 2 if the server cannot be reached.
    Client(ClientArgs),
    /// Store a student's record; prints the server's confirmation.
    ///
    /// The server stamps the record with its own `Last updated:` line. Exits 0 when stored, 1
    /// with the server's reason when refused, 2 when the server cannot be reached.
    Write(WriteArgs),
    /// Fetch the record of ID and save it as DIR/ID.txt; prints the file's path.
    ///
    /// Exits 0 when saved, 1 when the server has no such record (`Error reading file.`) or
    /// refused the request, 2 when the server cannot be reached.
    Read(ReadArgs),
    /// Print the server's status, one `key: value` per line.
    Info(InfoArgs),
}

/// Where the server is and how long to wait for it.
#[derive(Debug, Args)]
struct ServerArgs {
    /// The server's address.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:12000")]
    server: String,
    #[command(flatten)]
    patience: Patience,
}

/// How long to wait for the server.
#[derive(Debug, Args)]
struct Patience {
    /// Give up on connecting, or on an answer, after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    timeout: u64,
}

/// The password for servers with REQUIRE_AUTH=true.
#[derive(Debug, Default, Args)]
struct PasswordArgs {
    /// For a server with REQUIRE_AUTH=true: a file whose first line is the password of the id,
    /// sent (request type 4) before reading or writing it. The first one sent for an id sets it.
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,
}

/// Arguments of `cli record client`.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The server's host name or address; asked for when not given.
    #[arg(long)]
    host: Option<String>,
    /// The server's port; asked for when not given.
    #[arg(long)]
    port: Option<u16>,
    #[command(flatten)]
    patience: Patience,
    #[command(flatten)]
    password: PasswordArgs,
}

/// Arguments of `cli record write`.
#[derive(Debug, Args)]
pub struct WriteArgs {
    /// Student ID: 1 to 32 characters from A-Z, a-z, 0-9, '_' and '-'.
    #[arg(long)]
    id: String,
    /// Name.
    #[arg(long)]
    name: String,
    /// Date of birth, as you write it (e.g. 23/11/2000).
    #[arg(long)]
    dob: String,
    /// City.
    #[arg(long)]
    city: String,
    /// Reason for choosing the class.
    #[arg(long)]
    reason: String,
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    password: PasswordArgs,
}

/// Arguments of `cli record read`.
#[derive(Debug, Args)]
pub struct ReadArgs {
    /// The student ID whose record to fetch.
    id: String,
    /// The folder to save ID.txt in.
    #[arg(long, value_name = "DIR", default_value = ".")]
    out: PathBuf,
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    password: PasswordArgs,
}

/// Arguments of `cli record info`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    #[command(flatten)]
    server: ServerArgs,
}

/// Runs a record client subcommand.
pub fn run(command: RecordCommand) -> anyhow::Result<ExitCode> {
    logging::init("warn");
    match command {
        RecordCommand::Client(args) => menu::run(args),
        RecordCommand::Write(args) => write(args),
        RecordCommand::Read(args) => read(args),
        RecordCommand::Info(args) => info(args),
    }
}

impl Patience {
    fn duration(&self) -> Duration {
        Duration::from_secs(self.timeout)
    }
}

impl PasswordArgs {
    /// The password: the file's first line.
    fn load(&self) -> anyhow::Result<Option<String>> {
        let Some(path) = &self.password_file else {
            return Ok(None);
        };
        let text = fs::read_to_string(path)
            .with_context(|| format!("cannot read the password file {}", path.display()))?;
        match text.lines().next() {
            Some(password) if !password.is_empty() => Ok(Some(password.to_owned())),
            _ => bail!(
                "the password file {} is empty: its first line is the password",
                path.display()
            ),
        }
    }
}

impl ServerArgs {
    fn session(&self, password: &PasswordArgs) -> anyhow::Result<Session> {
        Ok(Session::new(
            self.server.clone(),
            self.patience.duration(),
            password.load()?,
        ))
    }
}

fn write(args: WriteArgs) -> anyhow::Result<ExitCode> {
    let mut session = args.server.session(&args.password)?;
    let record = StudentRecord {
        id: args.id,
        name: args.name,
        date_of_birth: args.dob,
        city: args.city,
        reason: args.reason,
    };
    let outcome = runtime()?.block_on(session.write(&record));
    conclude(outcome, |confirmation| {
        println!("{confirmation}");
        Ok(())
    })
}

fn read(args: ReadArgs) -> anyhow::Result<ExitCode> {
    let mut session = args.server.session(&args.password)?;
    let outcome = runtime()?.block_on(session.read(&args.id));
    conclude(found(outcome), |content| {
        let path = save_record(&args.out, &args.id, &content)?;
        println!("{}", path.display());
        Ok(())
    })
}

fn info(args: InfoArgs) -> anyhow::Result<ExitCode> {
    let mut session = args.server.session(&PasswordArgs::default())?;
    let outcome = runtime()?.block_on(session.info());
    conclude(outcome, |status| {
        print!("{}", describe_status(&status));
        Ok(())
    })
}

/// Exit status 0 once `show` has shown the answer; 1 with the server's reason on stderr when it
/// refused; an error (exit 2) when it could not be asked.
fn conclude<T>(
    outcome: Result<T, ClientError>,
    show: impl FnOnce(T) -> anyhow::Result<()>,
) -> anyhow::Result<ExitCode> {
    match refusal(outcome)? {
        Ok(answer) => {
            show(answer)?;
            Ok(ExitCode::SUCCESS)
        }
        Err(reason) => {
            eprintln!("{reason}");
            Ok(ExitCode::from(1))
        }
    }
}

/// Splits the server's refusals (`Ok(Err(reason))`) from failures to reach it (`Err`).
fn refusal<T>(outcome: Result<T, ClientError>) -> Result<Result<T, String>, ClientError> {
    match outcome {
        Ok(answer) => Ok(Ok(answer)),
        Err(ClientError::Refused(reason)) => Ok(Err(reason)),
        Err(err) => Err(err),
    }
}

/// A read whose record is missing as a refusal with the seed's `Error reading file.`.
fn found(outcome: Result<Option<String>, ClientError>) -> Result<String, ClientError> {
    outcome?.ok_or_else(|| ClientError::Refused(READ_MISS.to_owned()))
}

/// The status as `key: value` lines.
fn describe_status(status: &ServerStatus) -> String {
    format!(
        "connections: {}\nmax_connections: {}\nrecords: {}\nuptime_seconds: {}\nrequire_auth: {}\n",
        status.connections,
        status.max_connections,
        status.records,
        status.uptime_seconds,
        status.require_auth
    )
}

/// Saves a record read from the server as `<id>.txt` in `folder`, atomically; its absolute
/// path. The id is checked again here: it names a local file, whatever the server accepted.
fn save_record(folder: &Path, id: &str, content: &str) -> anyhow::Result<PathBuf> {
    let path = std::path::absolute(folder.join(RecordId::parse(id)?.file_name()))?;
    server_kit::write_atomically(&path, content.as_bytes())
        .with_context(|| format!("cannot save {}", path.display()))?;
    Ok(path)
}
