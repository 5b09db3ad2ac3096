//! Faults the servers must survive (issue 8), with the `cli` servers as child processes:
//!
//! - [`record`]: `cli record-server` killed with SIGKILL in the middle of 1,000 writes from
//!   concurrent connections, restarted on the same folder, at several points; and on a full and a
//!   read-only disk.
//! - [`forum`]: the same for `cli forum serve` (thread creations, posts, edits and deletions over
//!   UDP and TCP), and its commands, accounts and uploads on a full and a read-only disk.
//! - [`sandbox`]: a server on a tmpfs of its own, in a private mount namespace, whose disk the
//!   test fills, frees and remounts.

mod forum;
mod record;
mod sandbox;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The binary under test.
pub const CLI: &str = env!("CARGO_BIN_EXE_cli");

/// How long anything a server should do promptly may take.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Gives `command` `RUST_LOG=<log>` and none of the record server's settings in its
/// environment (they would override the server's defaults).
pub fn clean_env<'a>(command: &'a mut Command, log: &str) -> &'a mut Command {
    command.env("RUST_LOG", log);
    for key in record_server::config::KEYS {
        command.env_remove(key);
    }
    command
}

/// A `cli` server running as a child process on a data folder, to be killed with SIGKILL.
pub struct Killable {
    child: Child,
    /// The port it printed.
    pub port: u16,
}

impl Killable {
    /// Starts `cli <args> --data-dir <data_dir>` and reads its stdout until `port_of` finds the
    /// port in a line; the rest of its stdout is read and dropped, its stderr discarded.
    pub fn start(args: &[&str], data_dir: &Path, port_of: fn(&str) -> Option<u16>) -> Killable {
        let mut child = clean_env(&mut Command::new(CLI), "error")
            .args(args)
            .arg("--data-dir")
            .arg(data_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the server starts");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        let port = loop {
            line.clear();
            let read = stdout.read_line(&mut line).expect("the server's stdout");
            assert!(read > 0, "the server ended before printing its port");
            if let Some(port) = port_of(line.trim_end()) {
                break port;
            }
        };
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        Killable { child, port }
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> std::net::SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }

    /// SIGKILL, and waits for the process to be gone.
    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("the killed server is reaped");
    }
}

impl Drop for Killable {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The port in the first line of `cli record-server`.
pub fn record_server_port(line: &str) -> Option<u16> {
    line.strip_prefix("The server is ready to receive on port ")?
        .strip_suffix('.')?
        .parse()
        .ok()
}

/// The port in the first line of `cli forum serve`.
pub fn forum_server_port(line: &str) -> Option<u16> {
    let (_, rest) = line.split_once("127.0.0.1:")?;
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// The names in `folder` that are temporary files of an atomic write (`.<name>.tmp-...`).
pub fn temporary_files(folder: &Path) -> Vec<String> {
    std::fs::read_dir(folder)
        .expect("the folder lists")
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with('.') && name.contains(".tmp-"))
        .collect()
}

/// The whole of a file as text; panics, naming it, if it is not UTF-8.
pub fn read_text(path: &Path) -> String {
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|mut file| file.read_to_string(&mut text))
        .unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    text
}
