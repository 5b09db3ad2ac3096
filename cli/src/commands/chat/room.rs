//! `cli chat serve` and `cli chat join`: the chat room of seed 003.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use chat_p2p::room::{self, RoomConfig};
use clap::Args;

use crate::commands::{resolve, runtime, status_line};
use crate::logging;
use crate::prompt::stdin_lines;
use crate::signals::StopSignals;

/// Arguments of `cli chat serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0 picks a free one; the chosen port is printed).
    #[arg(long, default_value_t = 1234)]
    port: u16,
    /// Clients in the room at once; one more is told the room is full.
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..))]
    max_clients: u64,
    /// Tell everyone when someone joins or leaves (as messages from the user `server`).
    #[arg(long)]
    announce: bool,
    /// The largest message, in bytes; a bigger frame closes its sender.
    #[arg(long, value_name = "BYTES", default_value_t = 64 * 1024)]
    max_message: usize,
}

/// Arguments of `cli chat join`.
#[derive(Debug, Args)]
pub struct JoinArgs {
    /// The name the others see (1 to 32 bytes, no control characters).
    #[arg(long)]
    username: String,
    /// The room's address.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:1234")]
    server: String,
    /// After the end of the input, keep printing messages for this many seconds, then exit.
    #[arg(long, value_name = "SECS", default_value_t = 1.0)]
    linger: f64,
}

/// Serves the room until Ctrl+C or SIGTERM.
pub fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    logging::init("info");
    server_kit::fd_limit::raise_for_server();
    runtime()?.block_on(async {
        let signals = StopSignals::install()?;
        let listener = server_kit::listen(&args.host, args.port)
            .await
            .with_context(|| format!("cannot listen on {}:{}", args.host, args.port))?;
        let config = RoomConfig {
            max_clients: usize::try_from(args.max_clients).unwrap_or(usize::MAX),
            max_payload: args.max_message,
            announce: args.announce,
            ..RoomConfig::default()
        };
        status_line(&format!(
            "Listening for connections on {}...",
            listener.local_addr()?
        ));
        room::run(listener, config, signals.shutdown()).await?;
        status_line("Chat room closed.");
        Ok(ExitCode::SUCCESS)
    })
}

/// Joins the room: typed or piped lines go out, messages come in as `user > text` meanwhile.
pub fn join(args: JoinArgs) -> anyhow::Result<ExitCode> {
    logging::init("warn");
    let linger = Duration::try_from_secs_f64(args.linger)
        .ok()
        .context("--linger must be a number of seconds, 0 or more")?;
    runtime()?.block_on(async {
        let addr = resolve(args.server.as_str(), &args.server).await?;
        let (writer, reader) = room::join(addr, &args.username, Duration::from_secs(10)).await?;
        chat(writer, reader, linger).await
    })
}

/// The session: sends each input line, prints each message, until the server closes or the
/// input ends (then `linger` more of printing).
async fn chat(
    mut writer: room::RoomWriter,
    mut reader: room::RoomReader,
    linger: Duration,
) -> anyhow::Result<ExitCode> {
    let mut lines = stdin_lines();
    let mut input_open = true;
    let lingering = tokio::time::sleep(Duration::MAX);
    tokio::pin!(lingering);
    loop {
        tokio::select! {
            line = lines.recv(), if input_open => match line {
                Some(line) => writer.send(line.trim_end_matches('\r')).await?,
                None => {
                    input_open = false;
                    lingering.as_mut().reset(tokio::time::Instant::now() + linger);
                }
            },
            message = reader.next() => match message? {
                Some(message) => print_line(&format!("{} > {}", message.user, message.text)),
                None => {
                    print_line("Connection closed by the server");
                    return Ok(ExitCode::from(1));
                }
            },
            () = &mut lingering => {
                writer.close().await;
                return Ok(ExitCode::SUCCESS);
            }
        }
    }
}

/// Prints a line at once (stdout may be a pipe, which would otherwise hold it back).
fn print_line(line: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}
