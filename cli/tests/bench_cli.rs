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
