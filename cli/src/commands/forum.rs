//! `cli forum serve` and `cli forum connect`: the forum of seed 001 over UDP (the default, on the
//! reliable-datagram layer) or TCP.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use forum_server::Forum;
use forum_server::client::{ClientError, ForumClient, TransportKind};
use forum_server::server::{ServerConfig, Transport};
use forum_server::session::usage;
use protocol::forum::Cmd;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;

use super::{resolve, runtime, status_line};
use crate::logging;
use crate::progress::TransferBar;
use crate::prompt::stdin_lines;
use crate::signals::StopSignals;

/// The forum's subcommands.
#[derive(Debug, Subcommand)]
pub enum ForumCommand {
    /// Serve the forum until Ctrl+C, SIGTERM or an admin's SHT.
    ///
    /// Accounts live in DATA_DIR/credentials.txt (the assignment's plaintext `username password`
    /// lines are accepted and rewritten as argon2 hashes), threads in DATA_DIR/threads, uploads
    /// in DATA_DIR/uploads. File bodies travel over a TCP side channel on a port the server
    /// picks and announces with `TCP-open`.
    Serve(ServeArgs),
    /// Log in to a forum server and run commands, typed or piped one per line.
    Connect(ConnectArgs),
}

/// Which transport, as flags.
#[derive(Debug, Args)]
#[group(multiple = false)]
struct TransportArgs {
    /// Commands over UDP on the reliable-datagram layer (the default, as in the seed).
    #[arg(long)]
    udp: bool,
    /// Commands over TCP, length-prefixed.
    #[arg(long)]
    tcp: bool,
}

impl TransportArgs {
    fn kind(&self) -> TransportKind {
        if self.tcp {
            TransportKind::Tcp
        } else {
            TransportKind::Udp
        }
    }
}

/// Arguments of `cli forum serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port for commands (0 picks a free one; the chosen port is printed).
    #[arg(long)]
    port: u16,
    #[command(flatten)]
    transport: TransportArgs,
    /// Folder of accounts, threads and uploads (created if missing).
    #[arg(long, value_name = "DIR", default_value = "forum-data")]
    data_dir: PathBuf,
    /// End a session after this many seconds without a command (the client is told).
    #[arg(long, value_name = "SECS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    idle_timeout: u64,
    /// Enables `SHT <password>`, which tells every client and shuts the server down.
    #[arg(long, value_name = "PW")]
    admin_password: Option<String>,
}

/// Arguments of `cli forum connect`.
#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// The server's port.
    #[arg(long)]
    port: u16,
    /// The server's address.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[command(flatten)]
    transport: TransportArgs,
    /// Give up on an answer after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    timeout: u64,
}

/// Runs a forum subcommand.
pub fn run(command: ForumCommand) -> anyhow::Result<ExitCode> {
    match command {
        ForumCommand::Serve(args) => {
            logging::init("info");
            server_kit::fd_limit::raise_for_server();
            // Blocking (hashing the assignment's plaintext passwords): before the runtime starts.
            let forum = Forum::open(&args.data_dir, args.admin_password.clone())
                .with_context(|| format!("cannot open the forum in {}", args.data_dir.display()))?;
            runtime()?.block_on(serve(args, forum))
        }
        ForumCommand::Connect(args) => {
            logging::init("warn");
            runtime()?.block_on(connect(args))
        }
    }
}

async fn serve(args: ServeArgs, forum: Forum) -> anyhow::Result<ExitCode> {
    let mut config = ServerConfig::new(Arc::new(forum));
    config.idle_timeout = Duration::from_secs(args.idle_timeout);
    let signals = StopSignals::install()?;
    let addr = resolve((args.host.as_str(), args.port), &args.host).await?;
    let (transport, bound, name) = match args.transport.kind() {
        TransportKind::Udp => {
            let socket = UdpSocket::bind(addr)
                .await
                .with_context(|| format!("cannot bind UDP {addr}"))?;
            let bound = socket.local_addr()?;
            (Transport::Udp(socket), bound, "UDP")
        }
        TransportKind::Tcp => {
            let listener = server_kit::listen_on(addr)
                .with_context(|| format!("cannot listen on TCP {addr}"))?;
            let bound = listener.local_addr()?;
            (Transport::Tcp(listener), bound, "TCP")
        }
    };
    let transfers = TcpListener::bind((addr.ip(), 0)).await?;
    status_line(&format!(
        "Forum server listening on {name} {bound}; files over TCP port {}",
        transfers.local_addr()?.port()
    ));
    forum_server::server::run(transport, transfers, config, signals.shutdown()).await?;
    status_line("Forum server stopped.");
    Ok(ExitCode::SUCCESS)
}

/// The console side of a session: prompts on a terminal only, the next line or the server's end.
struct Console {
    lines: mpsc::Receiver<String>,
    prompts: bool,
}

/// What the console got: a line, the end of the input, or the server's end of the session.
enum Input {
    Line(String),
    Closed,
    Ended(ClientError),
}

impl Console {
    async fn next(&mut self, prompt: &str, client: &mut ForumClient) -> Input {
        if self.prompts {
            print!("{prompt}");
            let _ = std::io::stdout().flush();
        }
        tokio::select! {
            line = self.lines.recv() => line.map_or(Input::Closed, |l| Input::Line(l.trim().to_owned())),
            ended = client.ended() => Input::Ended(ended),
        }
    }
}

async fn connect(args: ConnectArgs) -> anyhow::Result<ExitCode> {
    let addr = resolve((args.host.as_str(), args.port), &args.host).await?;
    let patience = Duration::from_secs(args.timeout);
    let mut client = ForumClient::connect(addr, args.transport.kind(), patience).await?;
    let mut console = Console {
        lines: stdin_lines(),
        prompts: std::io::stdin().is_terminal(),
    };
    let outcome = match log_in(&mut client, &mut console).await {
        Ok(true) => commands(&mut client, &mut console).await,
        Ok(false) => Ok(ExitCode::SUCCESS),
        Err(err) => Err(err),
    };
    client.close().await;
    outcome
}

/// The seed's log-in dialogue; false when input ended first.
async fn log_in(client: &mut ForumClient, console: &mut Console) -> anyhow::Result<bool> {
    let mut step = Cmd::User;
    let mut user = String::new();
    loop {
        let prompt = match step {
            Cmd::Pw => "Enter password: ",
            Cmd::NewPw => "Enter new password: ",
            _ => "Enter username: ",
        };
        let answer = match console.next(prompt, client).await {
            Input::Line(answer) => answer,
            Input::Closed => return Ok(false),
            Input::Ended(ended) => return Err(ended.into()),
        };
        if step == Cmd::User {
            user.clone_from(&answer);
        }
        let reply = client.request(step.as_str(), &[answer.as_str()]).await?;
        match reply.cmd.parse::<Cmd>() {
            Ok(Cmd::Done) => {
                client.set_user(&user);
                println!("{}", reply.args.join(" "));
                return Ok(true);
            }
            Ok(next @ (Cmd::Pw | Cmd::NewPw)) => step = next,
            _ => {
                // Back to the username, with the server's reason (taken, wrong password, ...).
                if let Some(reason) = reply.args.first() {
                    println!("{reason}");
                }
                step = Cmd::User;
            }
        }
    }
}

const COMMAND_PROMPT: &str =
    "Enter one of the following commands: CRT, MSG, DLT, EDT, LST, RDT, UPD, DWN, RMV, XIT: ";

/// Commands until XIT, end of input, or the server ends the session.
async fn commands(client: &mut ForumClient, console: &mut Console) -> anyhow::Result<ExitCode> {
    loop {
        let line = match console.next(COMMAND_PROMPT, client).await {
            Input::Line(line) if line.is_empty() => continue,
            Input::Line(line) => line,
            Input::Closed => {
                let _ = client.request(Cmd::Xit.as_str(), &[]).await;
                return Ok(ExitCode::SUCCESS);
            }
            Input::Ended(ended) => {
                println!("{ended}");
                return Ok(ExitCode::from(1));
            }
        };
        let Some((cmd, args)) = parse_command(&line) else {
            continue;
        };
        match run_command(client, cmd, &args).await {
            Ok(true) => {}
            Ok(false) => return Ok(ExitCode::SUCCESS),
            Err(ended @ (ClientError::Ended(_) | ClientError::Closed | ClientError::Lost(_))) => {
                println!("{ended}");
                return Ok(ExitCode::from(1));
            }
            Err(ClientError::Refused { reason, .. }) => println!("{reason}"),
            Err(ClientError::Transfer(reason)) => println!("File transfer failed: {reason}"),
            Err(err) => return Err(err.into()),
        }
    }
}

/// The command and its arguments, checked locally; `None` after printing the usage line.
fn parse_command(line: &str) -> Option<(Cmd, Vec<String>)> {
    let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
    let cmd = match word.to_ascii_uppercase().parse::<Cmd>() {
        Ok(
            cmd @ (Cmd::Crt
            | Cmd::Msg
            | Cmd::Dlt
            | Cmd::Edt
            | Cmd::Lst
            | Cmd::Rdt
            | Cmd::Upd
            | Cmd::Dwn
            | Cmd::Rmv
            | Cmd::Xit
            | Cmd::Sht),
        ) => cmd,
        _ => {
            println!(
                "Invalid command {word}: use one of CRT, MSG, DLT, EDT, LST, RDT, UPD, DWN, RMV, XIT"
            );
            return None;
        }
    };
    // MSG and EDT take the rest of the line as the message.
    let words = match cmd {
        Cmd::Msg => 2,
        Cmd::Edt => 3,
        _ => usize::MAX,
    };
    let args: Vec<String> = rest
        .trim()
        .splitn(words, ' ')
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
        .collect();
    let wanted = match cmd {
        Cmd::Lst | Cmd::Xit => 0,
        Cmd::Crt | Cmd::Rdt | Cmd::Rmv | Cmd::Sht => 1,
        Cmd::Msg | Cmd::Dlt | Cmd::Upd | Cmd::Dwn => 2,
        _ => 3,
    };
    if args.len() != wanted {
        println!("Incorrect syntax for {}: {}", cmd.as_str(), usage(cmd));
        return None;
    }
    Some((cmd, args))
}

/// Runs one command and prints its outcome; false once the session is over.
async fn run_command(
    client: &mut ForumClient,
    cmd: Cmd,
    args: &[String],
) -> Result<bool, ClientError> {
    let here = Path::new(".");
    match cmd {
        Cmd::Upd => {
            let mut bar = TransferBar::new(&format!("uploading {}", args[1]));
            let verdict = client
                .upload(&args[0], Path::new(&args[1]), |sent, size| {
                    bar.update(sent, size)
                })
                .await?;
            drop(bar);
            println!("{verdict}");
        }
        Cmd::Dwn => {
            let mut bar = TransferBar::new(&format!("downloading {}", args[1]));
            let saved = client
                .download(&args[0], &args[1], here, |got, size| bar.update(got, size))
                .await?;
            drop(bar);
            println!(
                "{} successfully downloaded",
                saved
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or(&args[1])
            );
        }
        _ => {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let reply = client.request(cmd.as_str(), &args).await?;
            for line in &reply.args {
                println!("{line}");
            }
            if matches!(cmd, Cmd::Xit) || (cmd == Cmd::Sht && reply.cmd == Cmd::Done.as_str()) {
                return Ok(false);
            }
        }
    }
    Ok(true)
}
