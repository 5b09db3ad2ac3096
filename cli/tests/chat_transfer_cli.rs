//! `cli chat transfer receive` and `cli chat transfer send` as a user runs them: a receiver on
//! port 0, a file sent with --compare and its table of two rows, the file in the folder byte for
//! byte, the receiver's line per transfer, errors that say what went wrong, and the help.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::time::{Duration, Instant};

use integration_tests::process::{ServerChild, start_server};

const CLI: &str = env!("CARGO_BIN_EXE_cli");

/// A `cli chat transfer receive` child, the port it printed and the folder it saves to.
struct Receiver {
    child: Child,
    stdout: BufReader<ChildStdout>,
    port: u16,
    dir: tempfile::TempDir,
}

impl Receiver {
    fn start(extra: &[&str]) -> Receiver {
        let dir = tempfile::tempdir().unwrap();
        let ServerChild {
            child,
            stdout,
            first_line: first,
            port,
        } = start_server(
            Command::new(CLI)
                .args(["chat", "transfer", "receive", "--port", "0", "--out"])
                .arg(dir.path().join("inbox"))
                .args(extra),
        );
        assert!(
            first.starts_with("Transfer receiver on 127.0.0.1:") && first.contains("(TCP and UDP)"),
            "{first:?}"
        );
        Receiver {
            child,
            stdout,
            port,
            dir,
        }
    }

    fn inbox(&self) -> PathBuf {
        self.dir.path().join("inbox")
    }

    fn to(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn next_line(&mut self) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line
    }

    /// Sends SIGTERM-like Ctrl+C and waits for a clean exit; the rest of stdout.
    #[cfg(unix)]
    fn interrupt(mut self) -> String {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "{status}");
                break;
            }
            assert!(Instant::now() < deadline, "the receiver did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut rest = String::new();
        self.stdout.read_to_string(&mut rest).unwrap();
        rest
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn send(file: &Path, args: &[&str]) -> Output {
    Command::new(CLI)
        .args(["chat", "transfer", "send"])
        .arg(file)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// The cells of the table row that starts with `transport`.
fn row<'a>(out: &'a str, transport: &str) -> Vec<&'a str> {
    let line = out
        .lines()
        .find(|line| line.starts_with(&format!("| {transport} ")))
        .unwrap_or_else(|| panic!("no {transport} row in {out}"));
    line.trim_matches('|').split('|').map(str::trim).collect()
}

fn patterned(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 253) as u8 ^ (i >> 12) as u8)
        .collect()
}

#[test]
fn compare_sends_both_ways_and_prints_a_row_for_each() {
    let mut receiver = Receiver::start(&[]);
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("clip.bin");
    let contents = patterned(600_000);
    std::fs::write(&file, &contents).unwrap();

    let output = send(
        &file,
        &["--to", &receiver.to(), "--compare", "--rate", "4M"],
    );
    let (out, err) = (text(&output.stdout), text(&output.stderr));
    assert!(output.status.success(), "{out}{err}");
    assert_eq!(err, "", "piped: no progress bar, no noise");
    assert!(
        out.starts_with("Sending clip.bin (600000 bytes, SHA-256 "),
        "{out}"
    );
    let header = row(&out, "transport");
    assert_eq!(
        header,
        [
            "transport",
            "seconds",
            "MiB/s",
            "datagrams expected",
            "received",
            "lost",
            "reordered",
            "duplicated",
            "intact"
        ]
    );
    let tcp = row(&out, "TCP");
    assert_eq!(tcp[3..], ["-", "-", "-", "-", "-", "yes"], "{out}");
    assert!(tcp[1].parse::<f64>().unwrap() > 0.0, "{out}");
    let udp = row(&out, "UDP");
    let count = |cell: &str| cell.parse::<u64>().unwrap();
    assert_eq!(count(udp[3]), 500, "600000 bytes in 1200-byte datagrams");
    assert_eq!(count(udp[4]) + count(udp[5]), 500, "received + lost");
    assert!(out.contains("TCP: saved as clip.bin\n"), "{out}");
    assert_eq!(
        std::fs::read(receiver.inbox().join("clip.bin")).unwrap(),
        contents
    );

    // The UDP copy is whole (`clip (1).bin`) or kept as incomplete, never as clip.bin.
    let udp_saved = if udp[8] == "yes" {
        "clip (1).bin"
    } else {
        "clip.bin.incomplete"
    };
    assert!(out.contains(&format!("UDP: saved as {udp_saved}")), "{out}");
    assert!(receiver.inbox().join(udp_saved).exists());

    let first = receiver.next_line();
    assert!(
        first.starts_with("clip.bin from 127.0.0.1:") && first.contains(" over TCP: 600000 bytes"),
        "{first}"
    );
    assert!(
        first.trim_end().ends_with("; intact; saved as clip.bin"),
        "{first}"
    );
    let second = receiver.next_line();
    assert!(
        second.contains(" over UDP: ") && second.contains("datagrams expected 500, received "),
        "{second}"
    );
    #[cfg(unix)]
    assert_eq!(receiver.interrupt(), "Transfer receiver stopped.\n");
}

#[test]
fn a_udp_send_alone_prints_one_row() {
    let receiver = Receiver::start(&["--udp-buffer", "4M"]);
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("notes.txt");
    std::fs::write(&file, b"lecture notes").unwrap();
    let output = send(
        &file,
        &[
            "--to",
            &receiver.to(),
            "--udp",
            "--datagram-size",
            "5",
            "--as",
            "copy.txt",
        ],
    );
    let out = text(&output.stdout);
    assert!(output.status.success(), "{out}");
    let udp = row(&out, "UDP");
    assert_eq!(udp[3], "3", "13 bytes in 5-byte datagrams");
    assert!(!out.contains("| TCP "), "{out}");
    if udp[8] == "yes" {
        assert_eq!(
            std::fs::read(receiver.inbox().join("copy.txt")).unwrap(),
            b"lecture notes"
        );
    }
}

#[test]
fn errors_say_what_went_wrong_and_exit_non_zero() {
    let receiver = Receiver::start(&["--max-size", "1K"]);
    let src = tempfile::tempdir().unwrap();

    let missing = send(&src.path().join("missing.bin"), &["--to", &receiver.to()]);
    assert_eq!(missing.status.code(), Some(2));
    let err = text(&missing.stderr);
    assert!(
        err.starts_with("error: cannot read ") && err.contains("missing.bin"),
        "{err}"
    );

    let big = src.path().join("big.bin");
    std::fs::write(&big, vec![7; 2048]).unwrap();
    let refused = send(&big, &["--to", &receiver.to(), "--udp"]);
    assert_eq!(refused.status.code(), Some(2));
    let err = text(&refused.stderr);
    assert!(
        err.contains("sending big.bin over UDP failed")
            && err.contains("the receiver refused the transfer: file too large")
            && err.contains("limit of 1024 bytes"),
        "{err}"
    );

    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let unreachable = send(&big, &["--to", &closed.to_string()]);
    assert_eq!(unreachable.status.code(), Some(2));
    let err = text(&unreachable.stderr);
    assert!(err.contains("cannot connect to the receiver at"), "{err}");

    let both = send(&big, &["--to", &receiver.to(), "--tcp", "--udp"]);
    assert_eq!(both.status.code(), Some(2), "one transport flag at most");
    assert!(
        std::fs::read_dir(receiver.inbox())
            .unwrap()
            .next()
            .is_none()
    );
}

#[test]
fn help_mentions_every_flag() {
    let help = |which: &str| {
        let output = Command::new(CLI)
            .args(["chat", "transfer", which, "--help"])
            .output()
            .unwrap();
        assert!(output.status.success());
        text(&output.stdout)
    };
    let send_help = help("send");
    for flag in [
        "--to",
        "--tcp",
        "--udp",
        "--compare",
        "--rate",
        "--datagram-size",
        "--as",
        "--timeout",
        "BYTES_PER_SEC",
        "(the default)",
    ] {
        assert!(
            send_help.contains(flag),
            "send --help lacks {flag}:\n{send_help}"
        );
    }
    let receive_help = help("receive");
    for flag in [
        "--host",
        "--port",
        "--out",
        "--max-size",
        "--max-transfers",
        "--grace",
        "--timeout",
        "--udp-buffer",
        "NAME.incomplete",
    ] {
        assert!(
            receive_help.contains(flag),
            "receive --help lacks {flag}:\n{receive_help}"
        );
    }
}
