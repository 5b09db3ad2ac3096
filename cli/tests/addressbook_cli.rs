//! The `cli` binary as a user runs it: `addressbook query` and `serve` against real servers,
//! exit statuses (a busy server included), piped input, start-up errors, the open-file limit,
//! signals, the demo and the help texts.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener as StdListener;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use addressbook::{AddressBook, ServerConfig};
use integration_tests::RunningServer;
use integration_tests::process::{self, stderr, stdout};
use tokio::runtime::Runtime;

const CLI: &str = env!("CARGO_BIN_EXE_cli");

/// A seed-book server running on its own runtime while the test drives the binary.
struct Server {
    runtime: Runtime,
    running: Option<RunningServer>,
    addr: String,
}

impl Server {
    fn start() -> Server {
        Server::start_with(ServerConfig::new(AddressBook::seed()))
    }

    fn start_with(config: ServerConfig) -> Server {
        let runtime = Runtime::new().unwrap();
        let running = runtime.block_on(RunningServer::start(|listener, shutdown| {
            addressbook::run(listener, config, shutdown)
        }));
        let addr = running.addr.to_string();
        Server {
            runtime,
            running: Some(running),
            addr,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            self.runtime.block_on(running.stop());
        }
    }
}

fn cli(args: &[&str]) -> Command {
    let mut command = Command::new(CLI);
    command.args(args).env_remove("RUST_LOG");
    command
}

fn run_with_stdin(args: &[&str], stdin: &str) -> Output {
    process::run_with_stdin(&mut cli(args), stdin)
}

/// An address where nothing listens.
fn dead_addr() -> String {
    let listener = StdListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

#[test]
fn query_prints_a_line_per_email_and_exits_1_when_one_is_missing() {
    let server = Server::start();
    let output = cli(&[
        "addressbook",
        "query",
        "luke@gmail.com",
        "who@where.org",
        "ABC@gmail.com",
    ])
    .args(["--server", &server.addr])
    .output()
    .unwrap();
    assert_eq!(
        stdout(&output),
        "luke@gmail.com belongs to Luke Skywalker\n\
         who@where.org was not found in the address book\n\
         ABC@gmail.com belongs to abc\n"
    );
    assert_eq!(output.status.code(), Some(1), "stderr: {}", stderr(&output));
}

#[test]
fn query_exits_0_when_every_email_is_found() {
    let server = Server::start();
    let output = cli(&[
        "addressbook",
        "query",
        "jihoon.ryoo@sbu.edu",
        "--server",
        &server.addr,
    ])
    .output()
    .unwrap();
    assert_eq!(
        stdout(&output),
        "jihoon.ryoo@sbu.edu belongs to Jihoon Ryoo\n"
    );
    assert_eq!(output.status.code(), Some(0));
}

#[test]
fn query_exits_2_with_a_message_when_the_server_is_unreachable() {
    let addr = dead_addr();
    let output = cli(&["addressbook", "query", "luke@gmail.com", "--server", &addr])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(stdout(&output), "");
    let message = stderr(&output);
    assert!(
        message.contains("cannot connect") && message.contains(&addr),
        "{message}"
    );
}

#[test]
fn query_exits_2_saying_so_when_the_server_is_busy() {
    let mut config = ServerConfig::new(AddressBook::seed());
    config.max_connections = 1;
    let server = Server::start_with(config);
    // Holds the only slot; its answer proves the server has taken it.
    let mut holder = std::net::TcpStream::connect(&server.addr).unwrap();
    holder.write_all(b"Q\x0eluke@gmail.com").unwrap();
    let mut answer = [0u8; 16];
    holder.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"R\x0eLuke Skywalker");

    let output = cli(&[
        "addressbook",
        "query",
        "luke@gmail.com",
        "--server",
        &server.addr,
    ])
    .output()
    .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(stdout(&output), "");
    let message = stderr(&output);
    assert!(message.contains("server is busy"), "{message}");
}

#[test]
fn an_email_over_127_bytes_is_refused_before_connecting() {
    let long = format!("{}@example.com", "x".repeat(120));
    // Nothing listens there: a refusal about the length proves nothing was attempted.
    let output = cli(&[
        "addressbook",
        "query",
        "luke@gmail.com",
        &long,
        "--server",
        &dead_addr(),
    ])
    .output()
    .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let message = stderr(&output);
    assert!(
        message.contains("132 bytes") && message.contains("127"),
        "{message}"
    );
}

#[test]
fn the_interactive_loop_works_from_a_pipe() {
    let server = Server::start();
    let output = run_with_stdin(
        &["addressbook", "query", "--server", &server.addr],
        "luke@gmail.com\ny\nnobody@nowhere.org\nmaybe\nY\nroshan.poudel@stonybrook.edu\nn\nabc@gmail.com\n",
    );
    assert_eq!(
        stdout(&output),
        "luke@gmail.com belongs to Luke Skywalker\n\
         nobody@nowhere.org was not found in the address book\n\
         roshan.poudel@stonybrook.edu belongs to Roshan Poudel\n",
        "no prompts on stdout when stdin is piped; nothing after `n`"
    );
    assert!(stderr(&output).contains("Please answer y or n."));
    assert_eq!(output.status.code(), Some(1));
}

#[test]
fn the_interactive_loop_ends_cleanly_at_end_of_input() {
    let server = Server::start();
    let output = run_with_stdin(
        &["addressbook", "query", "--server", &server.addr],
        "abc@gmail.com\n",
    );
    assert_eq!(stdout(&output), "abc@gmail.com belongs to abc\n");
    assert_eq!(output.status.code(), Some(0));
}

#[test]
fn a_bad_book_stops_serve_naming_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let book = dir.path().join("staff.csv");
    std::fs::write(
        &book,
        format!("email,name\nok@x.org,Ok\nlong@x.org,{}\n", "n".repeat(130)),
    )
    .unwrap();
    let output = cli(&[
        "addressbook",
        "serve",
        "--port",
        "0",
        "--book",
        book.to_str().unwrap(),
    ])
    .output()
    .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let message = stderr(&output);
    assert!(
        message.contains("staff.csv")
            && message.contains("line 3")
            && message.contains("130 bytes"),
        "{message}"
    );
}

#[test]
fn serve_answers_queries_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let book = dir.path().join("book.json");
    std::fs::write(&book, r#"{"yoda@dagobah.org": "Yoda"}"#).unwrap();
    let mut server = cli(&[
        "addressbook",
        "serve",
        "--port",
        "0",
        "--book",
        book.to_str().unwrap(),
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let mut first_line = String::new();
    let mut server_stdout = BufReader::new(server.stdout.take().unwrap());
    server_stdout.read_line(&mut first_line).unwrap();
    let addr = first_line
        .trim()
        .strip_prefix("Address book listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {first_line:?}"))
        .to_owned();

    let output = cli(&[
        "addressbook",
        "query",
        "YODA@dagobah.org",
        "luke@gmail.com",
        "--server",
        &addr,
    ])
    .output()
    .unwrap();
    assert_eq!(
        stdout(&output),
        "YODA@dagobah.org belongs to Yoda\nluke@gmail.com was not found in the address book\n"
    );

    let killed = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let mut rest = String::new();
    server_stdout.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "Press Ctrl+C to quit.\n");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = server.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "serve did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "serve exited with {status}");
}

/// The soft and hard open-file limits of process `pid`.
fn open_file_limits(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .unwrap();
    let fields: Vec<&str> = line.split_whitespace().collect();
    (fields[3].to_owned(), fields[4].to_owned())
}

#[test]
fn serve_lifts_its_open_file_limit_to_the_hard_limit() {
    // Started with a soft limit of 256, as many systems start processes with 1024.
    let mut server = process::start_server(Command::new("sh").args([
        "-c",
        "ulimit -Sn 256 && exec \"$0\" addressbook serve --port 0",
        CLI,
    ]));
    let (soft, hard) = open_file_limits(server.child.id());
    let _ = server.child.kill();
    let _ = server.child.wait();
    assert_eq!(
        soft, hard,
        "the server kept a soft limit below its hard limit"
    );
}

#[test]
fn the_demo_shows_the_address_book_and_exits_0() {
    let output = cli(&["demo"]).output().unwrap();
    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr(&output));
    let transcript = stdout(&output);
    for expected in [
        r#"sent b"Q\x0eluke@gmail.com""#,
        r#"received b"R\x0eLuke Skywalker""#,
        r#"received b"R\tError 404""#,
        "roshan.poudel@stonybrook.edu belongs to Roshan Poudel",
        "vader@empire.gov was not found in the address book",
        r#"received b"R\x1fError: Unknown message protocol""#,
        "server stopped",
    ] {
        assert!(
            transcript.contains(expected),
            "missing {expected:?} in:\n{transcript}"
        );
    }
}

#[test]
fn help_lists_the_systems_and_explains_every_flag() {
    let top = stdout(&cli(&["--help"]).output().unwrap());
    assert!(top.contains("addressbook") && top.contains("demo"), "{top}");
    let serve = stdout(&cli(&["addressbook", "serve", "--help"]).output().unwrap());
    for flag in [
        "--host",
        "--port",
        "--book",
        "--idle-timeout",
        "--max-connections",
    ] {
        assert!(serve.contains(flag), "serve --help lacks {flag}:\n{serve}");
    }
    let query = stdout(&cli(&["addressbook", "query", "--help"]).output().unwrap());
    for flag in ["--server", "--timeout", "EMAIL"] {
        assert!(query.contains(flag), "query --help lacks {flag}:\n{query}");
    }
}
