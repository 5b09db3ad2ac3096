//! `cli record-server`: the record server of seed 000, configured by a `.env` file, the
//! environment and flags, printing the seed's console lines.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use record_server::{Overrides, ServerConfig, Settings};
use tracing::info;

use super::{runtime, status_line};
use crate::logging;
use crate::signals::{StopSignal, StopSignals};

/// Arguments of `cli record-server`.
#[derive(Debug, Args)]
#[command(after_help = settings_help())]
pub struct RecordServerArgs {
    /// Read the settings from this file instead of ./.env (it must exist). Relative paths in it
    /// are resolved against its folder.
    #[arg(long, value_name = "PATH")]
    env_file: Option<PathBuf>,
    /// Address or host name to listen on (overrides SERVER_HOST).
    #[arg(long, value_name = "HOST")]
    host: Option<String>,
    /// Port to listen on (overrides SERVER_PORT); 0 picks a free one, printed at start-up.
    #[arg(long)]
    port: Option<u16>,
    /// Keep the records in DIR/data and the record file in DIR (overrides FILE_PATH and
    /// RECORD_PATH).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

impl RecordServerArgs {
    fn overrides(self) -> Overrides {
        Overrides {
            env_file: self.env_file,
            host: self.host,
            port: self.port,
            data_dir: self.data_dir,
        }
    }
}

/// The settings part of `--help`: precedence, then every `.env` key with its default.
fn settings_help() -> String {
    let d = Settings::defaults(Path::new("."));
    let keys = [
        (
            "SERVER_PORT",
            "port to listen on (0: any free port)",
            d.port.to_string(),
        ),
        (
            "SERVER_HOST",
            "address or host name to listen on",
            d.host.clone(),
        ),
        (
            "MAX_CONNECTION",
            "connections served at once; one more is told the server is full",
            d.max_connections.to_string(),
        ),
        (
            "UPDATE_TIMER",
            "seconds between two passes of the updater",
            d.update_timer.as_secs().to_string(),
        ),
        (
            "UPDATE_TRESH",
            "the updater restamps records older than this many seconds",
            d.update_threshold.as_secs().to_string(),
        ),
        (
            "FILE_PATH",
            "folder of the <id>.txt records",
            d.file_path.display().to_string(),
        ),
        (
            "RECORD_PATH",
            "folder of the record file (and of passwords.json)",
            d.record_path.display().to_string(),
        ),
        (
            "RECORD_FILE",
            "name of the record file",
            d.record_file.clone(),
        ),
        (
            "CLIENT_TIMEOUT",
            "seconds after which an idle connection is closed",
            d.client_timeout.as_secs().to_string(),
        ),
        (
            "MAX_MESSAGE_BYTES",
            "longest request accepted, 1024 to 67108864",
            d.max_message_bytes.to_string(),
        ),
        (
            "REQUIRE_AUTH",
            "true: reading or writing an id needs its password",
            d.require_auth.to_string(),
        ),
    ];
    let mut help = String::from(
        "Settings, each overriding the one before: built-in defaults, the .env file (./.env or \
         --env-file), environment variables of the same names, the flags above. Relative paths \
         in the .env file are resolved against its folder, other relative paths against the \
         current folder; missing folders are created. A malformed value stops start-up with the \
         key, the value and what is expected.\n\n.env keys (default in brackets):\n",
    );
    for (key, meaning, default) in keys {
        help.push_str(&format!("  {key:<18} {meaning} [{default}]\n"));
    }
    help
}

/// Runs `cli record-server` until SIGINT or SIGTERM.
pub fn run(args: RecordServerArgs) -> anyhow::Result<ExitCode> {
    logging::init("info");
    server_kit::fd_limit::raise_for_server();
    let cwd = std::env::current_dir().context("cannot tell the current folder")?;
    let settings = Settings::load(&args.overrides(), &cwd)?;
    let source = match &settings.env_file {
        Some(path) => path.display().to_string(),
        None => "no .env file".to_owned(),
    };
    info!(
        "Settings: {source}; records in {}, record file {}",
        settings.file_path.display(),
        settings.record_file_path().display()
    );
    let (config, _repairs_already_logged) = ServerConfig::open(&settings)?;
    runtime()?.block_on(serve(&settings, config))
}

async fn serve(settings: &Settings, config: ServerConfig) -> anyhow::Result<ExitCode> {
    // Before the ready lines: whoever reads them may signal at once.
    let signals = StopSignals::install()?;
    let listener = server_kit::listen(&settings.host, settings.port).await?;
    let port = listener.local_addr()?.port();
    status_line(&format!("The server is ready to receive on port {port}."));
    status_line(&format!("Server host: {}", settings.host));
    status_line(&format!(
        "Server max connections: {}",
        settings.max_connections
    ));
    status_line("Press Ctrl+C to quit.");
    let shutdown = async { status_line(stop_message(signals.recv().await)) };
    record_server::run(listener, config, shutdown).await?;
    status_line("Server shut down.");
    Ok(ExitCode::SUCCESS)
}

/// The seed's line for the signal that stopped the server.
fn stop_message(signal: StopSignal) -> &'static str {
    match signal {
        StopSignal::Interrupt => "Server stopped with user keyboard interrupt.",
        StopSignal::Terminate => "Server stopped by SIGTERM.",
    }
}
