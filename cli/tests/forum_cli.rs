//! `cli forum serve` and `cli forum connect` as a user runs them: a whole session piped into the
//! client over UDP and over TCP, the idle notice arriving while the client waits for input, a
//! server killed under a client, an admin's SHT stopping the server, and the forum's part of the
//! demo.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use integration_tests::process::{ServerChild, assert_in_order, demo_part, start_server};

const CLI: &str = env!("CARGO_BIN_EXE_cli");

/// A `cli forum serve` child and the command port it printed.
struct Server {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(transport: &str, extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let ServerChild { child, port, .. } = start_server(
            Command::new(CLI)
                .args(["forum", "serve", "--port", "0", transport, "--data-dir"])
                .arg(dir.path().join("data"))
                .args(extra),
        );
        Server {
            child,
            port,
            _dir: dir,
        }
    }

    fn connect(&self, transport: &str, folder: &std::path::Path) -> Child {
        Command::new(CLI)
            .args([
                "forum",
                "connect",
                "--port",
                &self.port.to_string(),
                transport,
            ])
            .current_dir(folder)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Waits for the server to exit by itself.
    fn wait(mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Feeds `input` to a client and returns its exit code, stdout and stderr.
fn session(
    server: &Server,
    transport: &str,
    folder: &std::path::Path,
    input: &str,
) -> (i32, String, String) {
    let mut client = server.connect(transport, folder);
    client
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let output = client.wait_with_output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

#[test]
fn a_piped_session_runs_every_command_over_udp_and_tcp() {
    for transport in ["--udp", "--tcp"] {
        let server = Server::start(transport, &[]);
        let folder = tempfile::tempdir().unwrap();
        std::fs::write(folder.path().join("notes.txt"), b"lecture notes").unwrap();
        let input = "Yoda\njedi\nCRT 3331\nMSG 3331 Do or do not, there is no try\nLST\nFOO\nMSG 3331\n\
                     UPD 3331 notes.txt\nRDT 3331\nDWN 3331 missing.txt\nXIT\n";
        let (code, out, err) = session(&server, transport, folder.path(), input);
        assert_eq!(code, 0, "{out}");
        assert_eq!(err, "", "piped: no progress bar, no noise");
        assert_eq!(
            out,
            "Welcome to the forum, Yoda\nThread 3331 created\nMessage 1 posted to 3331 thread\n3331\n\
             Invalid command FOO: use one of CRT, MSG, DLT, EDT, LST, RDT, UPD, DWN, RMV, XIT\n\
             Incorrect syntax for MSG: MSG threadtitle message\nnotes.txt uploaded to 3331 thread\n\
             1 Yoda: Do or do not, there is no try\nYoda uploaded notes.txt\n\
             File missing.txt does not exist in thread 3331\nGoodbye, Yoda\n",
            "{transport}"
        );

        let other = tempfile::tempdir().unwrap();
        let (code, out, err) = session(
            &server,
            transport,
            other.path(),
            "Obi-wan\nkenobi\nDWN 3331 notes.txt\nXIT\n",
        );
        assert_eq!(code, 0, "{out}");
        assert_eq!(err, "", "piped: no progress bar, no noise");
        assert!(out.contains("notes.txt successfully downloaded"), "{out}");
        assert_eq!(
            std::fs::read(other.path().join("notes.txt")).unwrap(),
            b"lecture notes"
        );
    }
}

#[test]
fn an_idle_client_is_told_at_once_while_it_waits_for_input() {
    let server = Server::start("--udp", &["--idle-timeout", "1"]);
    let folder = tempfile::tempdir().unwrap();
    let mut client = server.connect("--udp", folder.path());
    let mut stdin = client.stdin.take().unwrap();
    stdin.write_all(b"Yoda\njedi\n").unwrap(); // then nothing, but stdin stays open
    let mut out = String::new();
    client
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let status = client.wait().unwrap();
    assert_eq!(status.code(), Some(1));
    assert!(
        out.ends_with("Session ended after 1 s without a command\n"),
        "{out}"
    );
    drop(stdin);
}

/// Logs a client in, kills the server with SIGKILL, sends LST; the client's stdout and exit code.
fn session_with_a_vanishing_server(transport: &str) -> (String, Option<i32>) {
    let mut server = Server::start(transport, &[]);
    let folder = tempfile::tempdir().unwrap();
    let mut client = server.connect(transport, folder.path());
    let mut stdin = client.stdin.take().unwrap();
    let mut stdout = BufReader::new(client.stdout.take().unwrap());
    stdin.write_all(b"Yoda\njedi\n").unwrap();
    let mut welcome = String::new();
    stdout.read_line(&mut welcome).unwrap();
    assert_eq!(welcome, "Welcome to the forum, Yoda\n");
    server.child.kill().unwrap(); // SIGKILL: no goodbye to anyone
    server.child.wait().unwrap();
    // Stdin stays open: only the server's end can end this. Over TCP the client may have seen
    // the end and exited already, so the write may find the pipe closed.
    let _ = stdin.write_all(b"LST\n");
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    let status = client.wait().unwrap();
    drop(stdin);
    (rest, status.code())
}

#[test]
fn a_client_whose_server_vanished_says_so_instead_of_hanging() {
    // Over TCP the kernel resets the connection; over UDP nothing says so, and the reliable
    // layer gives up after its retransmissions go unanswered (about 7 s with the defaults).
    let udp = std::thread::spawn(|| session_with_a_vanishing_server("--udp"));
    let tcp = session_with_a_vanishing_server("--tcp");
    assert_eq!(tcp, ("the server closed the connection\n".into(), Some(1)));
    let udp = udp.join().unwrap();
    assert_eq!(
        udp,
        (
            "lost the server: the peer stopped answering\n".into(),
            Some(1)
        )
    );
}

#[test]
fn an_admins_sht_tells_the_client_and_stops_the_server() {
    let server = Server::start("--tcp", &["--admin-password", "order66"]);
    let folder = tempfile::tempdir().unwrap();
    let (code, out, _) = session(
        &server,
        "--tcp",
        folder.path(),
        "Yoda\njedi\nSHT nope\nSHT order66\n",
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Wrong admin password\n"), "{out}");
    assert!(
        out.ends_with("The server is shutting down (Yoda asked)\n"),
        "{out}"
    );
    assert!(server.wait(), "the server exits 0 by itself");
}

#[test]
fn the_demo_runs_two_users_through_lossy_relays_and_shows_the_thread_file() {
    let forum = demo_part(CLI, "== Forum (seed 001)");
    assert_in_order(
        &forum,
        &[
            "CRT 3331 from Yoda = b\"\\x04Yoda\\x03CRT\\x01\\x043331\"",
            "-> user [\"Yoda is already logged in\"]",
            "-> error [\"Thread 3331 exists\"]",
            "-> error [\"The message belongs to another user and cannot be edited\"]",
            "-> TCP-open, saved, identical",
            "-> file-error [\"File missing.pdf does not exist in thread 3331\"]",
            "-- the thread file data/threads/3331:\n   Yoda\n   1 Obi-wan: General Kenobi\n   \
         2 Yoda: Do or do not, there is no try\n   Obi-wan uploaded lecture.pdf\n",
            "server stopped, threads, uploads and accounts kept",
        ],
    );
}
