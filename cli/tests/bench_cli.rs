//! `cli bench reliable` as a user runs it: a small transfer prints the table, bad options are
//! refused with exit status 2.

use std::process::Command;

const CLI: &str = env!("CARGO_BIN_EXE_cli");

#[test]
fn a_small_reliable_benchmark_prints_its_table() {
    let output = Command::new(CLI)
        .args(["bench", "reliable", "--mib", "1", "--runs", "1"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("| transport    | path   | loss | MiB/s"),
        "{stdout}"
    );
    assert!(
        stdout.contains("| reliable UDP | direct | 0%   |"),
        "{stdout}"
    );
    assert!(
        stdout.contains("| reliable UDP | relay  | 5%   |"),
        "{stdout}"
    );
    assert!(
        stdout.contains("| TCP          | direct | 0%   |"),
        "{stdout}"
    );
    assert!(stdout.contains("of TCP's throughput"), "{stdout}");
}

#[test]
fn impossible_options_are_refused() {
    for args in [
        &["--loss", "100"][..],
        &["--datagram-size", "10"],
        &["--mib", "0"],
    ] {
        let output = Command::new(CLI)
            .args(["bench", "reliable"])
            .args(args)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
    }
}

/// Runs `cli bench ARGS...`, expecting success; its stdout.
fn bench(args: &[&str]) -> String {
    let output = Command::new(CLI).arg("bench").args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{args:?}: {:?}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// The rows of the Markdown table in `stdout`, each a map from column title to cell.
fn table(stdout: &str) -> Vec<std::collections::HashMap<String, String>> {
    let cells = |line: &str| -> Vec<String> {
        line.trim()
            .trim_matches('|')
            .split('|')
            .map(|cell| cell.trim().to_string())
            .collect()
    };
    let mut lines = stdout.lines().filter(|line| line.starts_with('|'));
    let header = cells(lines.next().expect("a table"));
    lines
        .skip(1)
        .map(|line| header.iter().cloned().zip(cells(line)).collect())
        .collect()
}

/// Checks that `stdout`'s table has exactly the rows `expected` (workload, in flight), each
/// with no errors and a positive rate in the column `rate`.
fn assert_rows(stdout: &str, rate: &str, expected: &[(&str, &str)]) {
    let rows = table(stdout);
    let found: Vec<(&str, &str)> = rows
        .iter()
        .map(|row| (row["workload"].as_str(), row["in flight"].as_str()))
        .collect();
    assert_eq!(found, expected, "{stdout}");
    for row in &rows {
        assert_eq!(row["errors"], "0", "{stdout}");
        let value: f64 = row[rate].parse().unwrap();
        assert!(value > 0.0, "{stdout}");
    }
}

/// The options of a short run: one round of half a second, no warm-up.
const SHORT: [&str; 6] = ["--duration", "0.5", "--rounds", "1", "--warmup", "0"];

#[test]
fn a_short_addressbook_benchmark_compares_each_depth_with_the_echo() {
    let mut args = vec!["addressbook", "--connections", "4", "--pipeline", "1,4"];
    args.extend(SHORT);
    let stdout = bench(&args);
    assert_rows(
        &stdout,
        "requests/s",
        &[
            ("bare TCP echo", "1"),
            ("address book", "1"),
            ("bare TCP echo", "4"),
            ("address book", "4"),
        ],
    );
    let rows = table(&stdout);
    assert_eq!(rows[0]["vs echo"], "-");
    let ratio: f64 = rows[1]["vs echo"].parse().unwrap();
    assert!(ratio > 0.0, "{stdout}");
    assert!(
        stdout.contains("address book with 4 in flight: "),
        "{stdout}"
    );
}

#[test]
fn a_short_record_benchmark_reports_reads_and_durable_writes() {
    let mut args = vec!["record", "--connections", "3"];
    args.extend(SHORT);
    let stdout = bench(&args);
    assert_rows(
        &stdout,
        "requests/s",
        &[
            ("bare TCP echo", "1"),
            ("record reads", "1"),
            ("record writes (fsync)", "1"),
        ],
    );
    assert_eq!(table(&stdout)[2]["vs echo"], "-", "{stdout}");
}

#[test]
fn a_short_chat_benchmark_counts_deliveries() {
    let mut args = vec!["chat", "--connections", "6", "--pipeline", "2"];
    args.extend(SHORT);
    let stdout = bench(&args);
    assert_rows(&stdout, "deliveries/s", &[("chat room fan-out", "2")]);
    assert!(stdout.contains("each delivered to 5 clients"), "{stdout}");
}

#[test]
fn a_short_forum_benchmark_measures_each_loss_level() {
    let mut args = vec!["forum", "--connections", "3", "--loss", "0,10"];
    args.extend(SHORT);
    let stdout = bench(&args);
    assert_rows(
        &stdout,
        "commands/s",
        &[("forum RDT, 0% loss", "1"), ("forum RDT, 10% loss", "1")],
    );
    assert!(stdout.contains("its relays dropped"), "{stdout}");
}

#[test]
fn the_addressbook_benchmark_loads_a_running_server() {
    let mut server = integration_tests::process::start_server(Command::new(CLI).args([
        "addressbook",
        "serve",
        "--port",
        "0",
    ]));
    let addr = format!("127.0.0.1:{}", server.port);
    let mut args = vec![
        "addressbook",
        "--server",
        &addr,
        "--connections",
        "3",
        "--pipeline",
        "2",
    ];
    args.extend(SHORT);
    let stdout = bench(&args);
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    assert!(
        stdout.contains(&format!("server running at {addr}")),
        "{stdout}"
    );
    assert_rows(
        &stdout,
        "requests/s",
        &[("bare TCP echo", "2"), ("address book", "2")],
    );
}

#[test]
fn bad_load_options_are_refused() {
    for args in [
        &["addressbook", "--connections", "0"][..],
        &["addressbook", "--pipeline", "0"],
        &["addressbook", "--duration", "0"],
        &["addressbook", "--duration", "soon"],
        &["addressbook", "--rounds", "0"],
        &["addressbook", "--warmup", "-1"],
        &["addressbook", "--server", "no-such-host.invalid:1"],
        &["record", "--server", "127.0.0.1:1", "--data-dir", "x"],
        &["chat", "--connections", "1"],
        &["forum", "--loss", "100"],
        &["forum", "--command", "SHT"],
    ] {
        let output = Command::new(CLI).arg("bench").args(args).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
    }
}
