//! Helpers shared by the workspace integration tests in `tests/tests/`: a service started on
//! `127.0.0.1:0` in the test's runtime and stopped through its shutdown future, and raw-socket
//! reads that fail a test instead of hanging it.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// How long a test waits for anything the server should do promptly.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// The shutdown future handed to a server's `run`: completes when the test stops the server (or
/// drops its [`RunningServer`]).
#[derive(Debug)]
pub struct ShutdownSignal(oneshot::Receiver<()>);

impl Future for ShutdownSignal {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx).map(|_| ())
    }
}

/// A server task listening on a loopback port chosen by the OS.
#[derive(Debug)]
pub struct RunningServer {
    /// Where the server listens.
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<io::Result<()>>,
}

impl RunningServer {
    /// Binds `127.0.0.1:0` (with the servers' deep accept queue) and spawns `serve(listener, shutdown)`.
    pub async fn start<F, Fut>(serve: F) -> RunningServer
    where
        F: FnOnce(TcpListener, ShutdownSignal) -> Fut,
        Fut: Future<Output = io::Result<()>> + Send + 'static,
    {
        // As the `cli` servers do: std's backlog of 128 overflows under the concurrency tests.
        let listener =
            server_kit::listen_on(([127, 0, 0, 1], 0).into()).expect("listen on loopback");
        let addr = listener.local_addr().expect("local address");
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(serve(listener, ShutdownSignal(stopped)));
        RunningServer {
            addr,
            stop: Some(stop),
            task,
        }
    }

    /// Triggers the shutdown future and waits for `run` to return; panics if it takes longer
    /// than [`PATIENCE`] or fails.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = &mut self.task;
        timeout(PATIENCE, task)
            .await
            .expect("server did not stop in time")
            .expect("server task panicked")
            .expect("server returned an error");
    }
}

/// Reads exactly `n` bytes or fails the test.
pub async fn read_n(stream: &mut (impl AsyncRead + Unpin), n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    timeout(PATIENCE, stream.read_exact(&mut buf))
        .await
        .expect("timed out reading from the server")
        .expect("reading from the server failed");
    buf
}

/// Reads until the server closes; an error (a reset) or a timeout fails the test.
pub async fn read_until_closed(stream: &mut (impl AsyncRead + Unpin)) -> Vec<u8> {
    let mut buf = Vec::new();
    timeout(PATIENCE, stream.read_to_end(&mut buf))
        .await
        .expect("the server did not close the connection")
        .expect("the connection ended with an error instead of a clean close");
    buf
}

/// Running a binary (the `cli`) from a test: its output from given stdin, as text.
pub mod process {
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Child, ChildStdout, Command, Output, Stdio};

    /// A server started as a child process, after its first line (which names its address).
    #[derive(Debug)]
    pub struct ServerChild {
        /// The process.
        pub child: Child,
        /// The rest of its stdout.
        pub stdout: BufReader<ChildStdout>,
        /// Its first line.
        pub first_line: String,
        /// The port of the first `127.0.0.1:PORT` in that line.
        pub port: u16,
    }

    /// Starts `command` (a server given `--port 0`) with stdout piped and stderr discarded, and
    /// reads the first line it prints for the port it got.
    pub fn start_server(command: &mut Command) -> ServerChild {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the server starts");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut first_line = String::new();
        stdout.read_line(&mut first_line).expect("a first line");
        let port = first_line
            .split_once("127.0.0.1:")
            .map(|(_, rest)| {
                rest.chars()
                    .take_while(char::is_ascii_digit)
                    .collect::<String>()
            })
            .and_then(|digits| digits.parse().ok())
            .unwrap_or_else(|| panic!("no 127.0.0.1:PORT in {first_line:?}"));
        ServerChild {
            child,
            stdout,
            first_line,
            port,
        }
    }

    /// Runs `command` with `stdin` piped in (then closed) and collects its output.
    pub fn run_with_stdin(command: &mut Command, stdin: &str) -> Output {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts");
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(stdin.as_bytes())
            .expect("the binary reads its stdin");
        child.wait_with_output().expect("the binary ends")
    }

    /// The output's stdout as UTF-8.
    pub fn stdout(output: &Output) -> String {
        String::from_utf8(output.stdout.clone()).expect("UTF-8 stdout")
    }

    /// The output's stderr as UTF-8.
    pub fn stderr(output: &Output) -> String {
        String::from_utf8(output.stderr.clone()).expect("UTF-8 stderr")
    }

    /// The part of the transcript of `cli demo` (`cli` is the binary's path) from `heading` on,
    /// after checking that the demo exited 0.
    pub fn demo_part(cli: &str, heading: &str) -> String {
        let output = Command::new(cli)
            .arg("demo")
            .env_remove("RUST_LOG")
            .output()
            .expect("the demo runs");
        let transcript = stdout(&output);
        assert_eq!(output.status.code(), Some(0), "{transcript}");
        let (_, part) = transcript
            .split_once(heading)
            .unwrap_or_else(|| panic!("no {heading:?} in:\n{transcript}"));
        format!("{heading}{part}")
    }

    /// Fails the test unless each of `expected` occurs in `text`, in that order.
    pub fn assert_in_order(text: &str, expected: &[&str]) {
        let mut rest = text;
        for wanted in expected {
            let at = rest
                .find(wanted)
                .unwrap_or_else(|| panic!("missing {wanted:?}, in order, in:\n{text}"));
            rest = &rest[at + wanted.len()..];
        }
    }
}
