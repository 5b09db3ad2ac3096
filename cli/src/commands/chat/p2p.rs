//! `cli chat signal` and `cli chat peer`: the peer-to-peer chat of seed 004.
//!
//! The peer reads commands (see [`peer_commands::HELP`]) from stdin while it prints what
//! happens; `chat_p2p::peer::PeerClient` does the work. Piped stdin gets a script's
//! semantics: `/connect` waits for the answer and `/accept` / `/decline` for an introduction
//! before the next line is read, and at the end of the input the peer finishes its own
//! transfers and stays in its session until the other peer closes it.

use std::collections::{HashMap, HashSet};
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use chat_p2p::peer::{Direction, PeerClient, PeerConfig, PeerEvent, SessionConfig, SessionEvent};
use chat_p2p::signal::{self, SignalConfig};
use clap::Args;
use protocol::p2p::signal::{Presence, Visibility};
use protocol::p2p::stream::StreamReport;
use tokio::sync::mpsc;

use super::peer_commands::{self, HELP, PeerCommand};
use crate::commands::{resolve, runtime, status_line};
use crate::logging;
use crate::progress::TransferBar;
use crate::prompt::stdin_lines;
use crate::signals::StopSignals;

/// Arguments of `cli chat signal`.
#[derive(Debug, Args)]
pub struct SignalArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0 picks a free one; the chosen port is printed).
    #[arg(long, default_value_t = 7000)]
    port: u16,
    /// Folder of accounts.json (created if missing).
    #[arg(long, value_name = "DIR", default_value = ".")]
    data_dir: PathBuf,
    /// Connections at once; one more is told the server is full.
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..))]
    max_connections: u64,
    /// The pause before answering a failed log-in, doubled for each further failure of the
    /// same account (in seconds).
    #[arg(long, value_name = "SECS", default_value_t = 1.0)]
    failed_login_delay: f64,
    /// How long an introduction waits for its answer before it is declined (in seconds).
    #[arg(long, value_name = "SECS", default_value_t = 60.0)]
    introduction_timeout: f64,
    /// How long a connection may stay without logging in (from its opening or its last
    /// log-out) before it is told so and closed (in seconds).
    #[arg(long, value_name = "SECS", default_value_t = 300.0)]
    login_timeout: f64,
}

/// Arguments of `cli chat peer`.
#[derive(Debug, Args)]
pub struct PeerArgs {
    /// Your account's name.
    #[arg(long)]
    user: String,
    /// Read the password from this file (its first line); otherwise /signup and /login ask.
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,
    /// The signaling server.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:7000")]
    signal: String,
    /// The UDP port other peers send to (0 picks a free one).
    #[arg(long, value_name = "PORT", default_value_t = 0)]
    udp_port: u16,
    /// The interface the UDP socket binds to.
    #[arg(long, value_name = "IP", default_value = "0.0.0.0")]
    udp_host: std::net::IpAddr,
    /// Announce this address instead of the bound one: a router's public address forwarded to
    /// this peer's UDP port.
    #[arg(long, value_name = "HOST:PORT")]
    public_addr: Option<String>,
    /// Where received files are saved (under their own name, never over an existing file).
    #[arg(long, value_name = "DIR", default_value = ".")]
    download_dir: PathBuf,
    /// The media stream's real-time rate, in bytes per second.
    #[arg(long, value_name = "BYTES", default_value_t = 64 * 1024, value_parser = clap::value_parser!(u32).range(1024..))]
    stream_rate: u32,
    /// Seconds of silence after which the other peer counts as gone.
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    peer_timeout: f64,
}

/// Serves the signaling server until Ctrl+C or SIGTERM.
pub fn serve_signal(args: SignalArgs) -> anyhow::Result<ExitCode> {
    logging::init("info");
    server_kit::fd_limit::raise_for_server();
    let config = SignalConfig {
        data_dir: args.data_dir.clone(),
        max_connections: usize::try_from(args.max_connections).unwrap_or(usize::MAX),
        failed_login_delay: seconds(args.failed_login_delay, "--failed-login-delay")?,
        introduction_timeout: seconds(args.introduction_timeout, "--introduction-timeout")?,
        login_timeout: seconds(args.login_timeout, "--login-timeout")?,
        ..SignalConfig::default()
    };
    runtime()?.block_on(async {
        let signals = StopSignals::install()?;
        let listener = server_kit::listen(&args.host, args.port)
            .await
            .with_context(|| format!("cannot listen on {}:{}", args.host, args.port))?;
        status_line(&format!(
            "Signaling server listening on {}...",
            listener.local_addr()?
        ));
        signal::run(listener, config, signals.shutdown()).await?;
        status_line("Signaling server stopped.");
        Ok(ExitCode::SUCCESS)
    })
}

/// A duration given in seconds on the command line.
fn seconds(value: f64, flag: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value)
        .ok()
        .with_context(|| format!("{flag} must be a number of seconds, 0 or more"))
}

/// Runs a peer until /quit, the end of a script, or the loss of the signaling server.
pub fn peer(args: PeerArgs) -> anyhow::Result<ExitCode> {
    logging::init("warn");
    let peer_timeout = seconds(args.peer_timeout, "--peer-timeout")?;
    anyhow::ensure!(
        peer_timeout >= Duration::from_millis(500),
        "--peer-timeout must be at least 0.5 seconds"
    );
    runtime()?.block_on(async {
        let signal = resolve(args.signal.as_str(), &args.signal).await?;
        let public_addr = match &args.public_addr {
            Some(addr) => Some(resolve(addr.as_str(), addr).await?),
            None => None,
        };
        let mut session = SessionConfig {
            download_dir: args.download_dir.clone(),
            stream_rate: args.stream_rate,
            ..SessionConfig::default()
        };
        session.reliable.idle_timeout = peer_timeout;
        session.reliable.keep_alive = peer_timeout / 5;
        let config = PeerConfig {
            udp_bind: SocketAddr::new(args.udp_host, args.udp_port),
            public_addr,
            session,
            ..PeerConfig::new(signal)
        };
        let client = PeerClient::start(config)
            .await
            .with_context(|| format!("cannot reach the signaling server at {signal}"))?;
        let app = PeerApp::new(client, args);
        app.greet()?;
        app.run().await
    })
}

/// What a script is waiting for before its next line is read.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Waiting {
    /// The session with this peer, after our /connect or /accept (or a refusal).
    Answer(String),
    /// An introduction, to accept (true) or decline.
    Introduction { accept: bool, from: Option<String> },
}

/// The peer's terminal side: input lines, printed events, progress bars.
struct PeerApp {
    client: PeerClient,
    args: PeerArgs,
    lines: mpsc::Receiver<String>,
    input_open: bool,
    scripted: bool,
    waiting: Option<Waiting>,
    /// Our files on their way, until the receiver's verdict.
    sending: HashSet<u32>,
    /// Our streams, until the receiver's report.
    streaming: HashSet<u32>,
    bars: HashMap<(u32, bool), TransferBar>,
    quitting: bool,
    /// The signaling connection is gone: the peer exits 1 however its loop ends.
    signal_lost: bool,
}

impl PeerApp {
    fn new(client: PeerClient, args: PeerArgs) -> PeerApp {
        PeerApp {
            client,
            args,
            lines: stdin_lines(),
            input_open: true,
            scripted: !std::io::stdin().is_terminal(),
            waiting: None,
            sending: HashSet::new(),
            streaming: HashSet::new(),
            bars: HashMap::new(),
            quitting: false,
            signal_lost: false,
        }
    }

    fn greet(&self) -> anyhow::Result<()> {
        say(&format!(
            "Connected to the signaling server; UDP on {}. Type /help for the commands.",
            self.client.udp_addr()?
        ));
        Ok(())
    }

    async fn run(mut self) -> anyhow::Result<ExitCode> {
        while !self.finished() {
            let reading = self.input_open && self.waiting.is_none() && !self.quitting;
            let input = tokio::select! {
                line = self.lines.recv(), if reading => Input::Line(line),
                event = self.client.next_event() => Input::Event(event),
            };
            match input {
                Input::Line(Some(line)) => self.on_line(&line).await,
                Input::Line(None) => self.input_open = false,
                Input::Event(Some(event)) => self.on_event(event).await,
                // The signaling connection is gone (already said) and so is any session.
                Input::Event(None) => return Ok(ExitCode::from(1)),
            }
        }
        let code = self.exit_code();
        self.client.quit().await;
        Ok(code)
    }

    /// 1 once the signaling server was lost (whether the input or the event stream ended
    /// first), else 0.
    fn exit_code(&self) -> ExitCode {
        if self.signal_lost {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        }
    }

    /// Whether the loop is done: /quit, or the end of the input, once our transfers are over
    /// and (for a script) the other peer has closed the session.
    fn finished(&self) -> bool {
        let transfers_done = self.sending.is_empty() && self.streaming.is_empty();
        if self.quitting {
            return transfers_done;
        }
        !self.input_open
            && self.waiting.is_none()
            && transfers_done
            && (!self.scripted || self.client.session_peer().is_none())
    }

    async fn on_line(&mut self, line: &str) {
        match peer_commands::parse(line) {
            Ok(command) => {
                if let Err(err) = self.on_command(command).await {
                    complain(&format!("{err:#}"));
                }
            }
            Err(complaint) => complain(&complaint),
        }
    }

    async fn on_command(&mut self, command: PeerCommand) -> anyhow::Result<()> {
        match command {
            PeerCommand::Signup => self.signup().await?,
            PeerCommand::Login => self.login().await?,
            PeerCommand::List => self.list().await?,
            PeerCommand::Connect(user) => {
                self.client.connect(&user).await?;
                say(&format!("Asked {user} to talk; waiting for the answer."));
                if self.scripted {
                    self.waiting = Some(Waiting::Answer(user));
                }
            }
            PeerCommand::Accept(from) => self.answer(true, from).await?,
            PeerCommand::Decline(from) => self.answer(false, from).await?,
            PeerCommand::Message(text) => self.client.send_text(&text).await?,
            PeerCommand::Send(path) => {
                let ticket = self.client.send_file(&path).await?;
                self.sending.insert(ticket.id);
                say(&format!(
                    "Sending {} ({} bytes) to {}.",
                    ticket.name,
                    ticket.size,
                    self.peer_name()
                ));
            }
            PeerCommand::Stream(path) => {
                let ticket = self.client.stream_file(&path).await?;
                self.streaming.insert(ticket.id);
                say(&format!(
                    "Streaming {} to {}: {} chunks at {} bytes/s.",
                    ticket.name,
                    self.peer_name(),
                    ticket.chunks,
                    self.args.stream_rate
                ));
            }
            PeerCommand::Away => {
                self.client.set_presence(Presence::Away).await?;
                say("You are away: introductions are declined for you.");
            }
            PeerCommand::Back => {
                self.client.set_presence(Presence::Available).await?;
                say("You are available.");
            }
            PeerCommand::Visible(visibility) => {
                let shown = describe_visibility(&visibility);
                self.client.set_visibility(visibility).await?;
                say(&format!("Visible to {shown}."));
            }
            PeerCommand::Close => {
                self.wait_for_transfers().await;
                self.client.close().await?;
            }
            PeerCommand::Quit => self.quitting = true,
            PeerCommand::Help => say(HELP),
            PeerCommand::Nothing => {}
        }
        Ok(())
    }

    fn peer_name(&self) -> String {
        self.client.session_peer().unwrap_or("the peer").to_owned()
    }

    async fn signup(&mut self) -> anyhow::Result<()> {
        let password = self.password().await?;
        let user = self.args.user.clone();
        self.client.signup(&user, &password).await?;
        say(&format!("Signed up as {user}."));
        self.log_in_with(&password).await
    }

    async fn login(&mut self) -> anyhow::Result<()> {
        let password = self.password().await?;
        self.log_in_with(&password).await
    }

    async fn log_in_with(&mut self, password: &str) -> anyhow::Result<()> {
        let user = self.args.user.clone();
        let address = self.client.login(&user, password).await?;
        say(&format!(
            "Logged in as {user}; peers reach you at {address}."
        ));
        Ok(())
    }

    /// The password: the file's first line, or the next line typed (not echoed on a terminal).
    async fn password(&mut self) -> anyhow::Result<String> {
        if let Some(file) = &self.args.password_file {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read the password file {}", file.display()))?;
            return Ok(text.lines().next().unwrap_or_default().to_owned());
        }
        let typing = !self.scripted;
        if typing {
            print!("Password for {}: ", self.args.user);
            let _ = std::io::stdout().flush();
            set_echo(false);
        }
        let line = self.lines.recv().await;
        if typing {
            set_echo(true);
            println!();
        }
        line.map(|line| line.trim_end_matches('\r').to_owned())
            .context("the input ended before the password")
    }

    async fn list(&self) -> anyhow::Result<()> {
        let peers = self.client.list().await?;
        if peers.is_empty() {
            say("No peers visible.");
        }
        for peer in peers {
            say(&format!("{} ({})", peer.username, peer.state));
        }
        Ok(())
    }

    /// `/accept` or `/decline`; a script with no introduction yet waits for one.
    async fn answer(&mut self, accept: bool, from: Option<String>) -> anyhow::Result<()> {
        let waiting = match &from {
            Some(from) => self.client.introductions().any(|name| name == from),
            None => self.client.introductions().next().is_some(),
        };
        if !waiting && self.scripted {
            self.waiting = Some(Waiting::Introduction { accept, from });
            return Ok(());
        }
        if accept {
            let from = self.client.accept(from.as_deref()).await?;
            say(&format!("Accepted {from}."));
            if self.scripted && self.client.session_peer() != Some(from.as_str()) {
                // The session notice follows the reply: a script goes on once it is in.
                self.waiting = Some(Waiting::Answer(from));
            }
        } else {
            let from = self.client.decline(from.as_deref(), None).await?;
            say(&format!("Declined {from}."));
        }
        Ok(())
    }

    /// Our own files and streams finish first (their events still print).
    async fn wait_for_transfers(&mut self) {
        while !(self.sending.is_empty() && self.streaming.is_empty()) {
            match self.client.next_event().await {
                Some(event) => self.on_event(event).await,
                None => break,
            }
        }
    }

    async fn on_event(&mut self, event: PeerEvent) {
        match event {
            PeerEvent::Introduction { from } => {
                say(&format!("{from} wants to talk: /accept or /decline"));
                self.on_introduction(&from).await;
            }
            PeerEvent::Declined { peer, reason } => {
                say(&format!("{peer} declined: {reason}"));
                self.stop_waiting_for(&peer);
            }
            PeerEvent::SessionStarted { peer, address, .. } => {
                say(&format!(
                    "Session with {peer} ({address}) started; lines you type go to {peer}."
                ));
                self.stop_waiting_for(&peer);
            }
            PeerEvent::PartnerLeft { reason, .. } => say(&reason),
            PeerEvent::Session { peer, event } => self.on_session_event(&peer, event),
            PeerEvent::SignalLost => {
                self.signal_lost = true;
                say("Lost the signaling server.");
            }
        }
    }

    /// A script waiting for an introduction answers it now.
    async fn on_introduction(&mut self, from: &str) {
        let Some(Waiting::Introduction {
            accept,
            from: wanted,
        }) = self.waiting.clone()
        else {
            return;
        };
        if wanted.as_deref().is_some_and(|wanted| wanted != from) {
            return;
        }
        self.waiting = None;
        if let Err(err) = self.answer(accept, Some(from.to_owned())).await {
            complain(&format!("{err:#}"));
        }
    }

    fn stop_waiting_for(&mut self, peer: &str) {
        if self.waiting == Some(Waiting::Answer(peer.to_owned())) {
            self.waiting = None;
        }
    }

    fn on_session_event(&mut self, peer: &str, event: SessionEvent) {
        match event {
            SessionEvent::Connected => {}
            SessionEvent::Message { text } => say(&format!("{peer} > {text}")),
            SessionEvent::FileIncoming { name, size, .. } => {
                say(&format!("{peer} is sending {name} ({size} bytes)."));
            }
            SessionEvent::FileProgress {
                id,
                name,
                direction,
                done,
                total,
            } => {
                let sending = matches!(direction, Direction::Sending);
                let label = if sending {
                    format!("sending {name}")
                } else {
                    format!("receiving {name}")
                };
                self.bars
                    .entry((id, sending))
                    .or_insert_with(|| TransferBar::new(&label))
                    .update(done, total);
            }
            SessionEvent::FileSaved {
                id,
                name,
                path,
                size,
            } => {
                self.bars.remove(&(id, false));
                say(&format!(
                    "Saved {name} from {peer} ({size} bytes, SHA-256 verified) as {}.",
                    path.display()
                ));
            }
            SessionEvent::FileFailed {
                id,
                name,
                direction,
                reason,
            } => {
                let sending = matches!(direction, Direction::Sending);
                self.bars.remove(&(id, sending));
                if sending {
                    self.sending.remove(&id);
                    say(&format!("Sending {name} to {peer} failed: {reason}"));
                } else {
                    say(&format!("Receiving {name} from {peer} failed: {reason}"));
                }
            }
            SessionEvent::FileDelivered { id, name, saved_as } => {
                self.bars.remove(&(id, true));
                self.sending.remove(&id);
                say(&format!("{peer} saved {name} as {saved_as}."));
            }
            SessionEvent::StreamIncoming { name, rate, .. } => {
                say(&format!("{peer} is streaming {name} at {rate} bytes/s."));
            }
            SessionEvent::StreamReceived { name, report, .. } => {
                say(&format!(
                    "Stream {name} from {peer}: {}",
                    describe_report(&report)
                ));
            }
            SessionEvent::StreamSent { id, name, report } => {
                self.streaming.remove(&id);
                say(&format!(
                    "{peer} received {name}: {}",
                    describe_report(&report)
                ));
            }
            SessionEvent::Ended { reason } => {
                self.bars.clear();
                self.sending.clear();
                self.streaming.clear();
                say(&format!("Session with {peer} ended: {reason}."));
            }
        }
    }
}

/// What the peer's loop heard.
enum Input {
    Line(Option<String>),
    Event(Option<PeerEvent>),
}

/// `everyone`, `no one` or the names.
fn describe_visibility(visibility: &Visibility) -> String {
    match visibility {
        Visibility::Everyone => "everyone".to_owned(),
        Visibility::Nobody => "no one".to_owned(),
        Visibility::Allow(names) => names.join(", "),
    }
}

/// One line about a stream: what arrived, what was lost, the jitter.
fn describe_report(report: &StreamReport) -> String {
    format!(
        "{} of {} chunks, {} lost ({:.1}%), {} reordered, {} duplicated, jitter {:.2} ms",
        report.received,
        report.sent,
        report.lost,
        report.loss_percent(),
        report.reordered,
        report.duplicates,
        f64::from(report.jitter_us) / 1000.0
    )
}

/// Prints a line at once (stdout may be a pipe).
fn say(line: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}

/// Tells the user on stderr what went wrong with a command.
fn complain(line: &str) {
    eprintln!("error: {line}");
}

/// Turns the terminal's echo off or on, for typing a password (best effort: `stty`).
fn set_echo(on: bool) {
    let _ = std::process::Command::new("stty")
        .arg(if on { "echo" } else { "-echo" })
        .stdin(std::process::Stdio::inherit())
        .status();
}
