//! `cli bench idle` as a user runs it: ten thousand idle connections on the chat room and on the
//! address book, none refused below the limit, the one over it refused cleanly, memory reported;
//! refusals counted when the limit is below the connections; a running server loaded through
//! --server; and an open-file limit too low for the run said plainly.

use std::process::{Command, Output};
use std::sync::Mutex;

use integration_tests::process::{self, stderr, stdout};

const CLI: &str = env!("CARGO_BIN_EXE_cli");

/// Runs one ten-thousand-connection benchmark at a time: on a small machine two at once would
/// measure each other.
static HEAVY: Mutex<()> = Mutex::new(());

fn bench_idle(args: &[&str]) -> Output {
    Command::new(CLI)
        .args(["bench", "idle"])
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

/// The output's stdout, after checking that the run succeeded.
fn succeeded(output: &Output) -> String {
    let text = stdout(output);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{text}\nstderr: {}",
        stderr(output)
    );
    text
}

/// Fails unless every one of `expected` is in `text`.
fn assert_contains_all(text: &str, expected: &[&str]) {
    for wanted in expected {
        assert!(text.contains(wanted), "missing {wanted:?} in:\n{text}");
    }
}

/// The KiB per idle connection the run reported.
fn kib_per_connection(text: &str) -> f64 {
    let (before, _) = text
        .split_once(" KiB per idle connection")
        .unwrap_or_else(|| panic!("no memory figure in:\n{text}"));
    let figure = before.rsplit(' ').next().unwrap();
    figure
        .parse()
        .unwrap_or_else(|_| panic!("{figure:?} in:\n{text}"))
}

#[test]
fn the_chat_room_holds_ten_thousand_idle_clients_and_refuses_one_more() {
    let _one_at_a_time = HEAVY.lock().unwrap_or_else(|poison| poison.into_inner());
    let text = succeeded(&bench_idle(&["chat"]));
    assert_contains_all(
        &text,
        &[
            "| server    | connections | limit |",
            "| chat room | 10000       | 10000 |",
            "ok: none refused below the limit: 10000 of 10000 expected served",
            r#"ok: connection 10001 refused cleanly: told "The room is full (10000 clients)""#,
        ],
    );
    assert!(!text.contains("FAILED"), "{text}");
    let kib = kib_per_connection(&text);
    assert!(
        kib > 0.0 && kib < 20.0,
        "{kib} KiB per idle client:\n{text}"
    );
}

#[test]
fn the_address_book_holds_ten_thousand_idle_connections_and_refuses_one_more() {
    let _one_at_a_time = HEAVY.lock().unwrap_or_else(|poison| poison.into_inner());
    let text = succeeded(&bench_idle(&["addressbook"]));
    assert_contains_all(
        &text,
        &[
            "| address book | 10000       | 10000 |",
            "ok: none refused below the limit: 10000 of 10000 expected served; each answered a query",
            r#"ok: connection 10001 refused cleanly: told "Error: server busy""#,
        ],
    );
    assert!(!text.contains("FAILED"), "{text}");
    assert!(kib_per_connection(&text) > 0.0, "{text}");
}

#[test]
fn connections_over_a_lower_limit_are_counted_as_refused() {
    let text = succeeded(&bench_idle(&[
        "addressbook",
        "--connections",
        "300",
        "--limit",
        "200",
    ]));
    assert_contains_all(
        &text,
        &[
            "| address book | 300         | 200   |",
            "ok: none refused below the limit: 200 of 200 expected served",
            r#"ok: refused over the limit: 100 of 100, told "Error: server busy""#,
            r#"ok: connection 301 refused cleanly: told "Error: server busy""#,
        ],
    );
    let text = succeeded(&bench_idle(&[
        "chat",
        "--connections",
        "300",
        "--limit",
        "200",
    ]));
    assert_contains_all(
        &text,
        &[
            "ok: none refused below the limit: 200 of 200 expected served",
            r#"ok: refused over the limit: 100 of 100, told "The room is full (200 clients)""#,
        ],
    );
}

#[test]
fn a_running_server_is_loaded_and_its_memory_found() {
    let mut server = process::start_server(Command::new(CLI).args([
        "chat",
        "serve",
        "--port",
        "0",
        "--max-clients",
        "50",
    ]));
    let addr = format!("127.0.0.1:{}", server.port);
    let output = bench_idle(&["chat", "--server", &addr, "--connections", "50"]);
    let _ = server.child.kill();
    let _ = server.child.wait();
    let text = succeeded(&output);
    assert_contains_all(
        &text,
        &[
            &format!("(running, pid {})", server.child.id()),
            "limit 50 (assumed: pass --limit)",
            "ok: none refused below the limit: 50 of 50 expected served",
            r#"ok: connection 51 refused cleanly: told "The room is full (50 clients)""#,
            "KiB per idle connection",
        ],
    );
}

#[test]
fn a_server_that_is_not_there_is_an_error() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = dead.local_addr().unwrap().to_string();
    drop(dead);
    let output = bench_idle(&["addressbook", "--server", &addr, "--connections", "5"]);
    assert_eq!(output.status.code(), Some(2), "{}", stdout(&output));
    let message = stderr(&output);
    assert!(
        message.contains(&format!("cannot reach the server at {addr}")),
        "{message}"
    );
}

#[test]
fn an_open_file_limit_too_low_for_the_run_is_said_plainly() {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let hard = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .and_then(|line| line.split_whitespace().nth(4))
        .and_then(|hard| hard.parse::<u64>().ok());
    let Some(hard) = hard.filter(|&hard| hard <= 1_000_000) else {
        eprintln!("skipped: the hard open-file limit is above what --connections allows");
        return;
    };
    let output = bench_idle(&["chat", "--connections", &hard.to_string()]);
    assert_eq!(output.status.code(), Some(2));
    let message = stderr(&output);
    assert!(
        message.contains("open-file limit") && message.contains(&format!("hard limit {hard}")),
        "{message}"
    );
}

#[test]
fn impossible_options_are_refused() {
    for args in [
        &["chat", "--connections", "1"][..],
        &["chat", "--limit", "0"],
        &["mail"],
        &["addressbook", "--timeout", "0"],
    ] {
        let output = bench_idle(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
    }
}
