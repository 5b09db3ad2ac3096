//! A server whose data folder is a small tmpfs of its own: `unshare -rm` gives the shell that
//! starts it a private mount namespace (as root there, whoever runs the tests), the shell mounts
//! the tmpfs over a temporary folder, starts `cli <args> --data-dir <folder>` in the background
//! and stays beside it, reading one command per line from the test: fill the disk, free it,
//! remount the folder read-only or writable again, tell whether the server still runs. Outside
//! the namespace the folder stays empty; the tmpfs vanishes with the server.
//!
//! Without `unshare` (util-linux) or user namespaces the tests fail and say so.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::{CLI, PATIENCE, clean_env};

/// The shell in the namespace: `$1` the folder, `$2` the tmpfs size, the rest the server's
/// command line. Its own lines start with `sandbox:`; the server's stdout shares the pipe.
const SCRIPT: &str = r#"
dir=$1; size=$2; shift 2
mount -t tmpfs -o "size=$size" tmpfs "$dir" || { echo "sandbox: cannot mount a tmpfs on $dir"; exit 1; }
"$@" --data-dir "$dir" &
server=$!
trap 'kill -9 $server 2>/dev/null' EXIT
while read -r command; do
  case $command in
    fill) cat /dev/zero > "$dir/filler" 2>/dev/null; [ -s "$dir/filler" ] ;;
    free) rm -f "$dir/filler" ;;
    read-only) mount -o remount,ro "$dir" ;;
    writable) mount -o remount,rw "$dir" ;;
    alive) kill -0 $server ;;
    *) false ;;
  esac && echo "sandbox: $command ok" || echo "sandbox: $command failed"
done
"#;

/// What the sandbox's shell can do to the data folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disk {
    /// Fill the tmpfs to the last byte with a filler file.
    Fill,
    /// Delete the filler file.
    Free,
    /// Remount the tmpfs read-only.
    ReadOnly,
    /// Remount it read-write.
    Writable,
}

impl Disk {
    fn command(self) -> &'static str {
        match self {
            Disk::Fill => "fill",
            Disk::Free => "free",
            Disk::ReadOnly => "read-only",
            Disk::Writable => "writable",
        }
    }
}

/// A server running in its own mount namespace on a tmpfs, and the shell that controls it.
pub struct Sandbox {
    shell: Child,
    commands: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr: Option<JoinHandle<String>>,
    /// The port the server printed.
    pub port: u16,
    _folder: TempDir,
}

impl Sandbox {
    /// Starts `cli <args> --data-dir <tmpfs>` with a tmpfs of `size` (`256k`), and waits for
    /// the first line of stdout from which `port_of` reads the port.
    pub fn start(size: &str, args: &[&str], port_of: impl Fn(&str) -> Option<u16>) -> Sandbox {
        let folder = tempfile::tempdir().unwrap();
        let mut shell = clean_env(&mut Command::new("unshare"), "warn")
            .args(["-rm", "sh", "-c", SCRIPT, "sandbox"])
            .arg(folder.path())
            .arg(size)
            .arg(CLI)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| {
                panic!(
                    "cannot run `unshare` (util-linux), which the disk-fault tests need to give \
                     the server a tmpfs of its own: {err}"
                )
            });
        let lines = read_lines(shell.stdout.take().unwrap());
        let mut err = shell.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text);
            text
        });
        let mut sandbox = Sandbox {
            commands: shell.stdin.take(),
            shell,
            lines,
            stderr: Some(stderr),
            port: 0,
            _folder: folder,
        };
        sandbox.port = sandbox.wait_for_port(port_of);
        sandbox
    }

    fn wait_for_port(&mut self, port_of: impl Fn(&str) -> Option<u16>) -> u16 {
        loop {
            match self.next_line() {
                Some(line) if line.starts_with("sandbox:") => self.fail(&line),
                Some(line) => {
                    if let Some(port) = port_of(&line) {
                        return port;
                    }
                }
                None => self.fail("the sandbox ended before the server printed its port"),
            }
        }
    }

    /// Has the shell do `disk` to the data folder; panics if it could not.
    pub fn disk(&mut self, disk: Disk) {
        self.order(disk.command());
    }

    /// Panics unless the server process still runs.
    pub fn assert_alive(&mut self) {
        self.order("alive");
    }

    fn order(&mut self, command: &str) {
        let stdin = self.commands.as_mut().expect("the shell's stdin");
        writeln!(stdin, "{command}").expect("the sandbox's shell reads its commands");
        let done = format!("sandbox: {command} ok");
        loop {
            match self.next_line() {
                Some(line) if line == done => return,
                Some(line) if line.starts_with("sandbox:") => self.fail(&line),
                Some(_server_line) => {}
                None => self.fail(&format!("the sandbox ended before `{command}` was done")),
            }
        }
    }

    /// The next line of stdout, or `None` at its end; panics after [`PATIENCE`].
    fn next_line(&mut self) -> Option<String> {
        match self.lines.recv_timeout(PATIENCE) {
            Ok(line) => Some(line),
            Err(RecvTimeoutError::Disconnected) => None,
            Err(RecvTimeoutError::Timeout) => self.fail("the sandbox did not answer in time"),
        }
    }

    /// Panics with `what` and everything the sandbox said on stderr.
    fn fail(&mut self, what: &str) -> ! {
        self.commands = None;
        let _ = self.shell.kill();
        let _ = self.shell.wait();
        let stderr = self
            .stderr
            .take()
            .map(|reader| reader.join().unwrap_or_default())
            .unwrap_or_default();
        panic!(
            "{what}\n(the server runs under `unshare -rm`, which needs user and mount \
             namespaces; stderr of the sandbox:)\n{stderr}"
        );
    }
}

impl Drop for Sandbox {
    /// Closing the shell's stdin ends its loop, and its exit trap kills the server.
    fn drop(&mut self) {
        self.commands = None;
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.shell.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.shell.kill();
        let _ = self.shell.wait();
    }
}

/// Every line `stdout` prints, as they come, on a channel.
fn read_lines(stdout: impl Read + Send + 'static) -> Receiver<String> {
    let (send, receive) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if send.send(line).is_err() {
                return;
            }
        }
    });
    receive
}
