//! `cli chat serve` and `cli chat join` as a user runs them: a piped client that sends its lines
//! and prints what the others say while it lingers, a taken username, and Ctrl+C closing the
//! room.

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use integration_tests::process::{ServerChild, assert_in_order, demo_part, start_server};

const CLI: &str = env!("CARGO_BIN_EXE_cli");

/// A `cli chat serve --port 0` child and the port it printed.
struct Room {
    child: Child,
    /// The rest of its stdout, after the first line.
    stdout: BufReader<ChildStdout>,
    port: u16,
}

impl Room {
    fn start(extra: &[&str]) -> Room {
        let ServerChild {
            child,
            stdout,
            first_line,
            port,
        } = start_server(
            Command::new(CLI)
                .args(["chat", "serve", "--port", "0"])
                .args(extra)
                .env_remove("RUST_LOG"),
        );
        assert_eq!(
            first_line,
            format!("Listening for connections on 127.0.0.1:{port}...\n")
        );
        Room {
            child,
            stdout,
            port,
        }
    }

    fn join(&self, username: &str) -> Child {
        Command::new(CLI)
            .args(["chat", "join", "--username", username, "--linger", "1"])
            .args(["--server", &format!("127.0.0.1:{}", self.port)])
            .env_remove("RUST_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// A raw client that sent its username, as the seed's client does.
    fn raw(&self, username: &str) -> TcpStream {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.write_all(&frame(username.as_bytes())).unwrap();
        stream
    }
}

impl Drop for Room {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut bytes = format!("{:<10}", payload.len()).into_bytes();
    bytes.extend_from_slice(payload);
    bytes
}

/// Raw clients `first` and `second`, both in the room: `first` says `ready` until `second` hears
/// it (joins are not acknowledged, but only a member's message is relayed, and only to members).
fn two_raw(room: &Room, first: &str, second: &str) -> (TcpStream, TcpStream) {
    let mut one = room.raw(first);
    let two = room.raw(second);
    two.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        one.write_all(&frame(b"ready")).unwrap();
        let mut byte = [0; 1];
        if two.peek(&mut byte).is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "{second} never heard {first}");
    }
    two.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    (one, two)
}

/// One relayed message from a raw stream: (user, text).
fn read_message(stream: &mut TcpStream) -> (String, String) {
    let mut parts = Vec::new();
    for _ in 0..2 {
        let mut header = [0; 10];
        stream.read_exact(&mut header).unwrap();
        let len: usize = std::str::from_utf8(&header)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let mut payload = vec![0; len];
        stream.read_exact(&mut payload).unwrap();
        parts.push(String::from_utf8(payload).unwrap());
    }
    (parts.remove(0), parts.remove(0))
}

#[test]
fn a_piped_client_sends_its_lines_and_prints_what_others_say_while_it_lingers() {
    let room = Room::start(&[]);
    let mut bob = room.raw("bob");
    let mut alice = room.join("alice");
    let mut input = alice.stdin.take().unwrap();
    // Joins are not acknowledged: alice says `ready` until bob hears it (both are then in).
    let mut heard = false;
    let deadline = Instant::now() + Duration::from_secs(10);
    bob.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    while !heard && Instant::now() < deadline {
        input.write_all(b"ready\n").unwrap();
        let mut header = [0; 10];
        if bob.read_exact(&mut header).is_ok() {
            heard = true;
            let mut rest = vec![0; 5 + 10 + 5];
            bob.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            bob.read_exact(&mut rest).unwrap();
            assert_eq!(
                [&header[..], &rest].concat(),
                b"5         alice5         ready"
            );
        }
    }
    assert!(heard, "bob never heard alice");
    input.write_all("héllo, bob\n\nbye\n".as_bytes()).unwrap();
    loop {
        let (user, text) = read_message(&mut bob);
        assert_eq!(user, "alice");
        if text != "ready" {
            assert_eq!(text, "héllo, bob", "the empty line is not sent");
            break;
        }
    }
    assert_eq!(read_message(&mut bob), ("alice".into(), "bye".into()));
    bob.write_all(&frame("hi alice ✓".as_bytes())).unwrap();
    drop(input); // the end of the input: alice lingers a second, printing, then exits
    let output = alice.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        "bob > hi alice ✓\n"
    );
    assert_eq!(String::from_utf8(output.stderr).unwrap(), "");
}

#[test]
fn a_taken_username_is_refused_and_the_client_exits_1() {
    let room = Room::start(&[]);
    let (_alice, _bob) = two_raw(&room, "alice", "bob");
    let again = room.join("alice");
    let output = again.wait_with_output().unwrap(); // stdin closed: it would linger 1 s at most
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        "server > Username alice is taken\nConnection closed by the server\n"
    );
    assert_eq!(output.status.code(), Some(1));
}

#[test]
fn ctrl_c_closes_the_room_and_every_client() {
    let mut room = Room::start(&["--announce"]);
    let (mut alice, mut bob) = two_raw(&room, "alice", "bob");
    let pid = room.child.id().to_string();
    let status = Command::new("kill").args(["-INT", &pid]).status().unwrap();
    assert!(status.success());
    for client in [&mut alice, &mut bob] {
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).unwrap();
        let text = String::from_utf8(rest).unwrap();
        assert!(
            text.ends_with("6         server19        The room is closing"),
            "{text}"
        );
    }
    let status = room.child.wait().unwrap();
    assert!(status.success(), "{status}");
    let mut out = String::new();
    room.stdout.read_to_string(&mut out).unwrap();
    assert_eq!(out, "Chat room closed.\n");
}

#[test]
fn help_explains_the_room_commands() {
    let output = Command::new(CLI).args(["chat", "--help"]).output().unwrap();
    let help = String::from_utf8(output.stdout).unwrap();
    for text in ["serve", "join", "transfer"] {
        assert!(help.contains(text), "{help}");
    }
    let output = Command::new(CLI)
        .args(["chat", "join", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(output.stdout).unwrap();
    for text in ["--username", "--server", "--linger", "127.0.0.1:1234"] {
        assert!(help.contains(text), "{help}");
    }
}

#[test]
fn the_demo_shows_the_room_bytes_and_both_transfers() {
    let chat = demo_part(CLI, "== Chat room (seed 003)");
    assert_in_order(
        &chat,
        &[
            "bob   receives b\"5         alice11        hello, room\"",
            "received b\"6         server23        Username alice is taken\", then the connection closed",
            "alice and Søren receive b\"6         server17        bob left the room\"",
            "dana's reader gives: Søren > hej dana 👋",
            "== Chat transfer (seed 003, task 3)",
            "| TCP       |",
            "| UDP       |",
            "TCP: saved as lecture.mp4\n",
            "receiver stopped",
        ],
    );
}
