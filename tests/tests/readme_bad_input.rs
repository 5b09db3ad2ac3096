//! The README's "Bad input" tables stay backed by tests: every row names a test by its file and
//! function, and that file must hold that function under a test attribute. Each system has its
//! table, and every row says what the system does.

use std::path::{Path, PathBuf};

/// The systems the section must cover, by their table's heading.
const SYSTEMS: [&str; 6] = [
    "Record server",
    "Forum",
    "Address book",
    "Chat room",
    "Chat transfer",
    "Peer-to-peer chat",
];

/// One row of a table: its bad input, what happens, and the test's file and function.
#[derive(Debug)]
struct Row {
    system: String,
    input: String,
    outcome: String,
    file: String,
    test: String,
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate is inside the workspace")
        .to_owned()
}

/// The lines of the README's "## Bad input" section.
fn section(readme: &str) -> Vec<&str> {
    let mut lines = readme.lines().skip_while(|line| *line != "## Bad input");
    let heading = lines
        .next()
        .expect("the README has a \"## Bad input\" section");
    std::iter::once(heading)
        .chain(lines.take_while(|line| !line.starts_with("## ")))
        .collect()
}

/// The rows of every table of the section, each with its table's `###` heading.
fn rows(section: &[&str]) -> Vec<Row> {
    let mut system = String::new();
    let mut rows = Vec::new();
    for line in section {
        if let Some(heading) = line.strip_prefix("### ") {
            system = heading.to_owned();
            continue;
        }
        let Some(inner) = line.strip_prefix("| ").and_then(|l| l.strip_suffix(" |")) else {
            continue;
        };
        let cells: Vec<&str> = inner.split(" | ").collect();
        if cells[0] == "Bad input" || cells[0].starts_with("---") {
            continue;
        }
        assert_eq!(cells.len(), 3, "a row of three cells: {line}");
        rows.push(row(&system, &cells, line));
    }
    rows
}

/// A row whose last cell reads `` `FILE`: `FUNCTION` ``.
fn row(system: &str, cells: &[&str], line: &str) -> Row {
    let (file, test) = cells[2]
        .split_once(": ")
        .unwrap_or_else(|| panic!("the test cell is `FILE`: `FUNCTION`: {line}"));
    let unquote = |text: &str| {
        text.strip_prefix('`')
            .and_then(|t| t.strip_suffix('`'))
            .unwrap_or_else(|| panic!("{text} is in backticks: {line}"))
            .to_owned()
    };
    Row {
        system: system.to_owned(),
        input: cells[0].to_owned(),
        outcome: cells[1].to_owned(),
        file: unquote(file),
        test: unquote(test),
    }
}

/// Whether `source` defines `fn name(` right under a `#[test]` or `#[tokio::test...]`
/// attribute (other attributes and doc comments may sit between).
fn defines_test(source: &str, name: &str) -> bool {
    let lines: Vec<&str> = source.lines().collect();
    let signature = format!("fn {name}(");
    lines.iter().enumerate().any(|(at, line)| {
        line.contains(&signature)
            && lines[..at]
                .iter()
                .rev()
                .map(|l| l.trim())
                .take_while(|l| l.starts_with("#[") || l.starts_with("///"))
                .any(|l| l == "#[test]" || l.starts_with("#[tokio::test"))
    })
}

#[test]
fn every_row_names_a_test_that_exists() {
    let root = workspace_root();
    let readme = std::fs::read_to_string(root.join("README.md")).expect("the README");
    let rows = rows(&section(&readme));
    let mut missing = Vec::new();
    for row in &rows {
        let path = root.join(&row.file);
        let source = std::fs::read_to_string(&path).unwrap_or_default();
        if !defines_test(&source, &row.test) {
            missing.push(format!("{}: {} ({})", row.system, row.test, row.file));
        }
        assert!(
            !row.input.is_empty() && !row.outcome.is_empty(),
            "{row:?} says what was tried and what happens"
        );
    }
    assert!(missing.is_empty(), "rows naming no test: {missing:#?}");
}

#[test]
fn every_system_has_a_table_of_several_rows() {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).expect("the README");
    let rows = rows(&section(&readme));
    for system in SYSTEMS {
        let count = rows.iter().filter(|row| row.system == system).count();
        assert!(count >= 5, "{system} has {count} rows");
    }
}

#[test]
fn the_test_finder_needs_the_attribute() {
    let source = "#[test]\nfn real() {}\n\nfn helper() {}\n#[tokio::test(flavor = \"multi_thread\")]\n/// Doc.\nasync fn async_one() {}\n";
    assert!(defines_test(source, "real"));
    assert!(defines_test(source, "async_one"));
    assert!(!defines_test(source, "helper"));
    assert!(!defines_test(source, "absent"));
}
