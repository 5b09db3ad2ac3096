//! `cli chat signal` and `cli chat peer` as users run them: two scripted peers that sign up, are
//! introduced, chat, send a file and stream one, then close; a peer killed mid-stream, reported
//! to the other; and mistakes answered on stderr.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use integration_tests::process::{ServerChild, assert_in_order, start_server};

const CLI: &str = env!("CARGO_BIN_EXE_cli");

/// How long a test waits for a line a peer should print.
const PATIENCE: Duration = Duration::from_secs(20);

/// A `cli chat signal --port 0` child.
struct Signal {
    child: Child,
    port: u16,
}

impl Signal {
    fn start(data_dir: &Path) -> Signal {
        let ServerChild {
            child,
            first_line,
            port,
            ..
        } = start_server(
            Command::new(CLI)
                .args([
                    "chat",
                    "signal",
                    "--port",
                    "0",
                    "--failed-login-delay",
                    "0.05",
                ])
                .arg("--data-dir")
                .arg(data_dir)
                .env_remove("RUST_LOG"),
        );
        assert_eq!(
            first_line,
            format!("Signaling server listening on 127.0.0.1:{port}...\n")
        );
        Signal { child, port }
    }
}

impl Drop for Signal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `cli chat peer` child with piped stdin, and its stdout line by line.
struct Peer {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    /// Every line read so far.
    seen: Vec<String>,
}

impl Peer {
    /// Starts `user` with a password file and a download folder of its own in `dir`.
    fn start(signal: &Signal, dir: &Path, user: &str) -> Peer {
        let password = dir.join(format!("{user}.password"));
        std::fs::write(&password, format!("{user}'s secret\n")).unwrap();
        let downloads = dir.join(user);
        std::fs::create_dir_all(&downloads).unwrap();
        let mut child = Command::new(CLI)
            .args(["chat", "peer", "--user", user, "--udp-host", "127.0.0.1"])
            .args(["--signal", &format!("127.0.0.1:{}", signal.port)])
            .arg("--password-file")
            .arg(&password)
            .arg("--download-dir")
            .arg(&downloads)
            .env_remove("RUST_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Peer {
            stdin: child.stdin.take(),
            child,
            lines,
            seen: Vec::new(),
        }
    }

    fn type_lines(&mut self, text: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        stdin.write_all(text.as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    fn end_input(&mut self) {
        self.stdin = None;
    }

    /// Reads lines until one contains `wanted`, failing after [`PATIENCE`].
    fn wait_for(&mut self, wanted: &str) -> String {
        loop {
            match self.lines.recv_timeout(PATIENCE) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(wanted) {
                        return line;
                    }
                }
                Err(_) => panic!("no {wanted:?} in:\n{}", self.seen.join("\n")),
            }
        }
    }

    /// Waits for the exit; gives its code, the whole stdout and the stderr.
    fn finish(mut self) -> (Option<i32>, String, String) {
        self.end_input();
        let status = wait_with_deadline(&mut self.child);
        self.seen.extend(self.lines.iter());
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            std::io::Read::read_to_string(&mut pipe, &mut stderr).unwrap();
        }
        (status, self.seen.join("\n"), stderr)
    }
}

/// The child's exit code, killing it if it has not exited within [`PATIENCE`].
fn wait_with_deadline(child: &mut Child) -> Option<i32> {
    let deadline = std::time::Instant::now() + PATIENCE;
    while std::time::Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    panic!("the peer did not exit in time");
}

fn pseudo_random(len: usize, seed: u32) -> Vec<u8> {
    let mut state = seed.wrapping_mul(2_654_435_761) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect()
}

#[test]
fn two_scripted_peers_chat_send_a_file_stream_one_and_close() {
    let dir = tempfile::tempdir().unwrap();
    let signal = Signal::start(&dir.path().join("signal"));
    let file = pseudo_random(300_000, 1);
    std::fs::write(dir.path().join("notes.bin"), &file).unwrap();
    std::fs::write(dir.path().join("clip.raw"), pseudo_random(64 * 1024, 2)).unwrap();

    let mut bob = Peer::start(&signal, dir.path(), "bob");
    bob.type_lines("/signup\n");
    bob.wait_for("Logged in as bob");
    bob.type_lines("/accept\n");
    bob.end_input();

    let mut alice = Peer::start(&signal, dir.path(), "alice");
    let notes = dir.path().join("notes.bin");
    let clip = dir.path().join("clip.raw");
    alice.type_lines(&format!(
        "/signup\n/list\n/connect bob\nhello bob\n/send {}\n/stream {}\n/close\n",
        notes.display(),
        clip.display()
    ));
    let (alice_code, alice_out, alice_err) = alice.finish();
    let (bob_code, bob_out, bob_err) = bob.finish();
    assert_eq!(alice_code, Some(0), "{alice_out}\n{alice_err}");
    assert_eq!(bob_code, Some(0), "{bob_out}\n{bob_err}");
    assert_eq!(alice_err, "");
    assert_eq!(bob_err, "");
    // The file and the stream run side by side: each keeps its own order.
    for expected in [
        &[
            "Signed up as alice.",
            "Logged in as alice; peers reach you at 127.0.0.1:",
            "bob (available)",
            "Asked bob to talk; waiting for the answer.",
            "Session with bob (127.0.0.1:",
            "Sending notes.bin (300000 bytes) to bob.",
            "bob saved notes.bin as notes.bin.",
            "Session with bob ended: we closed the session.",
        ][..],
        &[
            "Streaming clip.raw to bob: 64 chunks at 65536 bytes/s.",
            "bob received clip.raw: 64 of 64 chunks, 0 lost (0.0%)",
            "Session with bob ended: ",
        ],
    ] {
        assert_in_order(&alice_out, expected);
    }
    for expected in [
        &[
            "Signed up as bob.",
            "alice wants to talk: /accept or /decline",
            "Accepted alice.",
            "Session with alice (127.0.0.1:",
            "alice > hello bob",
            "alice is sending notes.bin (300000 bytes).",
            "Saved notes.bin from alice (300000 bytes, SHA-256 verified)",
            "Session with alice ended: the other peer closed the session.",
        ][..],
        &[
            "alice is streaming clip.raw at 65536 bytes/s.",
            "Stream clip.raw from alice: 64 of 64 chunks, 0 lost (0.0%)",
            "Session with alice ended: ",
        ],
    ] {
        assert_in_order(&bob_out, expected);
    }
    let saved = std::fs::read(dir.path().join("bob").join("notes.bin")).unwrap();
    assert!(saved == file, "the saved file differs from the one sent");
    assert!(!dir.path().join("bob").join("clip.raw").exists());
}

#[test]
fn a_peer_killed_mid_stream_is_reported_to_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let signal = Signal::start(&dir.path().join("signal"));
    // Ten seconds of stream at the default 64 KiB/s.
    let clip = dir.path().join("long.raw");
    std::fs::write(&clip, pseudo_random(640 * 1024, 3)).unwrap();

    let mut bob = Peer::start(&signal, dir.path(), "bob");
    bob.type_lines("/signup\n");
    bob.wait_for("Logged in as bob");
    bob.type_lines("/accept\n");

    let mut alice = Peer::start(&signal, dir.path(), "alice");
    alice.type_lines(&format!(
        "/signup\n/connect bob\n/stream {}\n",
        clip.display()
    ));
    alice.end_input();
    bob.wait_for("alice is streaming long.raw");
    bob.child.kill().unwrap();
    let _ = bob.child.wait();

    let (code, out, err) = alice.finish();
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert_in_order(
        &out,
        &[
            "Streaming long.raw to bob",
            "bob went offline",
            "Session with bob ended: ",
        ],
    );
    assert!(!out.contains("bob received long.raw"), "{out}");
}

#[test]
fn mistakes_are_answered_on_stderr_and_the_peer_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let signal = Signal::start(&dir.path().join("signal"));
    let mut carol = Peer::start(&signal, dir.path(), "carol");
    carol.type_lines(
        "/frobnicate\nhello?\n/list\n/signup\n/connect nobody\n/send\n/visible none\n/quit\n",
    );
    let (code, out, err) = carol.finish();
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert_in_order(
        &err,
        &[
            "error: unknown command /frobnicate (try /help)",
            "error: you are not in a session",
            "error: log in first",
            "error: no peer named nobody is online",
            "error: /send needs a file",
        ],
    );
    assert_in_order(
        &out,
        &[
            "Signed up as carol.",
            "Logged in as carol",
            "Visible to no one.",
        ],
    );
}

#[test]
fn the_demo_shows_the_peer_to_peer_chat() {
    let part = integration_tests::process::demo_part(CLI, "== Peer-to-peer chat (seed 004)");
    assert_in_order(
        &part,
        &[
            r#"sent     b'15        {"type":"list"}'"#,
            r#"received b'53        {"type":"error","re":"list","message":"log in first"}'"#,
            "bob's list: alice (available), carol (away)",
            "carol's list: bob (available)",
            "carol queries alice: no peer named alice is online",
            "declined by the server for carol: carol is away",
            "alice: session with bob at 127.0.0.1:",
            "bob prints: alice > hi bob, over UDP",
            "alice prints: bob > hi alice",
            "bob saved slides.pdf, SHA-256 verified and identical",
            "1 forged, 0 replayed, 0 foreign",
            "alice gets the same report back",
            "alice: session ended: we closed the session",
            "bob: session ended: the other peer closed the session",
            "bob's list now: alice (available), carol (available)",
            "signaling server stopped",
        ],
    );
}

#[test]
fn a_peer_says_when_the_signaling_server_is_gone_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let mut signal = Signal::start(&dir.path().join("signal"));
    let mut dana = Peer::start(&signal, dir.path(), "dana");
    dana.type_lines("/signup\n");
    dana.wait_for("Logged in as dana");
    signal.child.kill().unwrap();
    let _ = signal.child.wait();
    dana.wait_for("Lost the signaling server.");
    let (code, out, _) = dana.finish();
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(
        out.matches("Lost the signaling server.").count(),
        1,
        "{out}"
    );
}
