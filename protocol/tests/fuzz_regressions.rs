//! Replays the fuzzers' kept inputs through the same property checks the fuzz targets run
//! ([`protocol::fuzz_checks`]): every file of the minimized corpus `fuzz/corpus/<target>/` and
//! every crashing input `fuzz/regressions/<target>/`. A target whose corpus is missing or
//! empty fails, so that losing the corpus is noticed.

use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use protocol::fuzz_checks;

/// A property check: panics on an input that breaks it.
type Check = fn(&[u8]);

/// Every fuzz target, by the name of its folders, with its check.
const TARGETS: &[(&str, Check)] = &[
    ("record_stream", fuzz_checks::record_stream),
    ("forum_envelope", fuzz_checks::forum_envelope),
    ("addressbook", fuzz_checks::addressbook),
    ("chat_header", fuzz_checks::chat_header),
    ("reliable_header", fuzz_checks::reliable_header),
    ("signal", fuzz_checks::signal),
    ("p2p_secure", fuzz_checks::p2p_secure),
    ("p2p_session", fuzz_checks::p2p_session),
    ("p2p_stream", fuzz_checks::p2p_stream),
    ("chat_transfer", fuzz_checks::chat_transfer),
    ("reliable_connection", fuzz_checks::reliable_connection),
];

/// The `fuzz/` folder at the root of the workspace.
fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The files of `dir`, sorted; none if it does not exist.
fn files_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("a readable folder entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

/// Runs `check` on every file, collecting the ones that fail rather than stopping at the first.
fn failures(check: Check, files: &[PathBuf]) -> Vec<String> {
    let mut failed = Vec::new();
    for file in files {
        let data = fs::read(file).expect("a readable input");
        if panic::catch_unwind(AssertUnwindSafe(|| check(&data))).is_err() {
            failed.push(file.display().to_string());
        }
    }
    failed
}

/// Replays the corpus and the regressions of the target called `name`.
fn replay(name: &str) {
    let (_, check) = TARGETS
        .iter()
        .find(|(target, _)| *target == name)
        .expect("a known target");
    let corpus = files_in(&fuzz_dir().join("corpus").join(name));
    assert!(
        !corpus.is_empty(),
        "fuzz/corpus/{name}/ is missing or empty: the minimized corpus must be kept"
    );
    let regressions = files_in(&fuzz_dir().join("regressions").join(name));
    let failed = failures(*check, &[corpus, regressions].concat());
    assert!(failed.is_empty(), "inputs failing {name}: {failed:#?}");
}

#[test]
fn every_target_has_a_folder_here_and_a_fuzz_target() {
    for (name, _) in TARGETS {
        let target = fuzz_dir().join("fuzz_targets").join(format!("{name}.rs"));
        assert!(target.is_file(), "no fuzz target {}", target.display());
    }
    let targets = files_in(&fuzz_dir().join("fuzz_targets"));
    assert_eq!(
        targets.len(),
        TARGETS.len(),
        "a fuzz target is not replayed here"
    );
}

#[test]
fn record_stream() {
    replay("record_stream");
}

#[test]
fn forum_envelope() {
    replay("forum_envelope");
}

#[test]
fn addressbook() {
    replay("addressbook");
}

#[test]
fn chat_header() {
    replay("chat_header");
}

#[test]
fn reliable_header() {
    replay("reliable_header");
}

#[test]
fn signal() {
    replay("signal");
}

#[test]
fn p2p_secure() {
    replay("p2p_secure");
}

#[test]
fn p2p_session() {
    replay("p2p_session");
}

#[test]
fn p2p_stream() {
    replay("p2p_stream");
}

#[test]
fn chat_transfer() {
    replay("chat_transfer");
}

#[test]
fn reliable_connection() {
    replay("reliable_connection");
}
