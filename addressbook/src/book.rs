//! The address book itself: e-mail addresses mapped to their owners' names.
//!
//! The seed's four entries are built in ([`AddressBook::seed`]). A book file replaces them: either
//! CSV, one `email,name` per line (blank lines, `#` comments and an `email,name` header line are
//! skipped; the name is everything after the first comma and may be double-quoted), or a JSON
//! object `{"email": "name", ...}`. Every entry must be sendable: both the e-mail and the name fit
//! the header's 127-byte length, neither is empty, and no e-mail appears twice. An entry that breaks
//! a rule is an error naming the file and the line, so a bad book stops the server at start-up
//! instead of answering wrongly later.
//!
//! Look-ups ignore the case of the e-mail address.

use std::fmt;
use std::path::{Path, PathBuf};

use protocol::addressbook::{MAX_BODY_LEN, Message, NOT_FOUND, SERVER_BUSY, UNKNOWN_PROTOCOL};
use rustc_hash::FxHashMap;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use thiserror::Error;

/// The entries of the seed's server.
pub const SEED_ENTRIES: [(&str, &str); 4] = [
    ("luke@gmail.com", "Luke Skywalker"),
    ("jihoon.ryoo@sbu.edu", "Jihoon Ryoo"),
    ("abc@gmail.com", "abc"),
    ("roshan.poudel@stonybrook.edu", "Roshan Poudel"),
];

/// Why a book file could not be loaded.
#[derive(Debug, Error)]
pub enum BookError {
    /// The file could not be read.
    #[error("cannot read the address book {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// An entry, or the file's syntax, is wrong at a known line.
    #[error("address book {}, line {line}: {reason}", path.display())]
    Entry {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong there.
        reason: String,
    },
    /// The file holds no entries at all.
    #[error("address book {} holds no entries", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

/// E-mail addresses (compared without case) and their owners' names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressBook {
    /// Lower-cased e-mail to the response naming its owner, built once at load so that answering
    /// a query copies bytes and allocates nothing.
    answers: FxHashMap<String, Message>,
}

impl AddressBook {
    /// The seed's four entries.
    pub fn seed() -> AddressBook {
        let mut book = AddressBook::default();
        for (email, name) in SEED_ENTRIES {
            book.insert(email, name)
                .expect("the seed entries are valid");
        }
        book
    }

    /// Loads a CSV or JSON book file (JSON when its first non-blank character is `{`).
    pub fn load(path: &Path) -> Result<AddressBook, BookError> {
        let text = std::fs::read_to_string(path).map_err(|source| BookError::Read {
            path: path.to_owned(),
            source,
        })?;
        AddressBook::parse(&text, path)
    }

    /// Parses the text of a book file; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<AddressBook, BookError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let book = if text.trim_start().starts_with('{') {
            parse_json(text, path)?
        } else {
            parse_csv(text, path)?
        };
        if book.answers.is_empty() {
            return Err(BookError::Empty {
                path: path.to_owned(),
            });
        }
        Ok(book)
    }

    /// The name of the owner of `email`, whatever its case.
    pub fn lookup(&self, email: &str) -> Option<&str> {
        self.answer(email).map(Message::body)
    }

    /// The response naming the owner of `email` (whatever its case), ready to send.
    pub fn answer(&self, email: &str) -> Option<&Message> {
        // Keys are lower case: most queries are too, and need no lowered copy.
        if let Some(answer) = self.answers.get(email) {
            return Some(answer);
        }
        let lowered = email.to_lowercase();
        if lowered == email {
            return None;
        }
        self.answers.get(&lowered)
    }

    /// How many entries the book holds.
    pub fn len(&self) -> usize {
        self.answers.len()
    }

    /// Whether the book holds no entries.
    pub fn is_empty(&self) -> bool {
        self.answers.is_empty()
    }

    /// Adds an entry after checking it can be queried and answered; the reason when it cannot.
    pub fn insert(&mut self, email: &str, name: &str) -> Result<(), String> {
        let email = email.trim();
        let name = name.trim();
        check_field("e-mail", email)?;
        check_field("name", name)?;
        if [NOT_FOUND, UNKNOWN_PROTOCOL, SERVER_BUSY].contains(&name) {
            return Err(format!(
                "the name {name:?} is what the server answers on errors; clients would read it as one"
            ));
        }
        let key = email.to_lowercase();
        if self.answers.contains_key(&key) {
            return Err(format!("the e-mail {email:?} is listed twice"));
        }
        let answer = Message::response(name).map_err(|err| err.to_string())?;
        self.answers.insert(key, answer);
        Ok(())
    }
}

fn check_field(what: &str, value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("the {what} is empty"));
    }
    if value.len() > MAX_BODY_LEN {
        return Err(format!(
            "the {what} {value:?} is {} bytes; the protocol carries at most {MAX_BODY_LEN}",
            value.len()
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(format!("the {what} {value:?} holds a control character"));
    }
    Ok(())
}

fn parse_csv(text: &str, path: &Path) -> Result<AddressBook, BookError> {
    let mut book = AddressBook::default();
    let mut seen_data = false;
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let is_header = !seen_data && line.eq_ignore_ascii_case("email,name");
        seen_data = true;
        if is_header {
            continue;
        }
        let entry_error = |reason: String| BookError::Entry {
            path: path.to_owned(),
            line: index + 1,
            reason,
        };
        let (email, name) = line
            .split_once(',')
            .ok_or_else(|| entry_error(format!("expected `email,name`, found {line:?}")))?;
        book.insert(email, &unquote(name.trim()))
            .map_err(entry_error)?;
    }
    Ok(book)
}

/// A CSV field without its surrounding double quotes, `""` read as `"`.
fn unquote(field: &str) -> String {
    match field.strip_prefix('"').and_then(|f| f.strip_suffix('"')) {
        Some(inner) => inner.replace("\"\"", "\""),
        None => field.to_owned(),
    }
}

fn parse_json(text: &str, path: &Path) -> Result<AddressBook, BookError> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let book = deserializer
        .deserialize_map(BookVisitor)
        .and_then(|book| deserializer.end().map(|()| book));
    // serde_json stamps errors raised while visiting an entry with that entry's position.
    book.map_err(|err| BookError::Entry {
        path: path.to_owned(),
        line: err.line(),
        reason: without_position(&err),
    })
}

/// serde_json's message without the " at line L column C" it appends.
fn without_position(err: &serde_json::Error) -> String {
    let text = err.to_string();
    let suffix = format!(" at line {} column {}", err.line(), err.column());
    text.strip_suffix(&suffix).unwrap_or(&text).to_owned()
}

struct BookVisitor;

impl<'de> Visitor<'de> for BookVisitor {
    type Value = AddressBook;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object mapping e-mail addresses to names")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut entries: M) -> Result<AddressBook, M::Error> {
        let mut book = AddressBook::default();
        while let Some((email, name)) = entries.next_entry::<String, String>()? {
            book.insert(&email, &name).map_err(de::Error::custom)?;
        }
        Ok(book)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<AddressBook, BookError> {
        AddressBook::parse(text, Path::new("book.txt"))
    }

    fn entry_error(text: &str) -> (usize, String) {
        match parse(text) {
            Err(BookError::Entry { line, reason, .. }) => (line, reason),
            other => panic!("expected an entry error, got {other:?}"),
        }
    }

    #[test]
    fn seed_book_answers_the_seed_queries_without_case() {
        let book = AddressBook::seed();
        assert_eq!(book.len(), 4);
        assert_eq!(book.lookup("luke@gmail.com"), Some("Luke Skywalker"));
        assert_eq!(book.lookup("LUKE@Gmail.COM"), Some("Luke Skywalker"));
        assert_eq!(
            book.lookup("roshan.poudel@stonybrook.edu"),
            Some("Roshan Poudel")
        );
        assert_eq!(book.lookup("nobody@gmail.com"), None);
    }

    #[test]
    fn csv_with_header_comments_quotes_and_commas_in_names() {
        let book = parse(
            "\u{feff}email,name\n# staff\n\nyoda@dagobah.org, Yoda\n\
             leia@alderaan.org,\"Organa, Leia \"\"General\"\"\"\nhan@falcon.space,Solo, Han\n",
        )
        .unwrap();
        assert_eq!(book.len(), 3);
        assert_eq!(book.lookup("YODA@dagobah.org"), Some("Yoda"));
        assert_eq!(
            book.lookup("leia@alderaan.org"),
            Some("Organa, Leia \"General\"")
        );
        assert_eq!(book.lookup("han@falcon.space"), Some("Solo, Han"));
    }

    #[test]
    fn csv_errors_name_the_line() {
        assert_eq!(entry_error("a@b,A\nno comma here\n").0, 2);
        let (line, reason) = entry_error(&format!("a@b,A\n\nlong@x,{}\n", "n".repeat(128)));
        assert_eq!(line, 3);
        assert!(reason.contains("128 bytes"), "{reason}");
        let (line, reason) = entry_error("a@b,A\nA@B,Again\n");
        assert_eq!(line, 2);
        assert!(reason.contains("twice"), "{reason}");
        assert_eq!(entry_error("a@b,\n").0, 1);
        let (line, reason) = entry_error("a@b,Error 404\n");
        assert_eq!(line, 1);
        assert!(reason.contains("errors"), "{reason}");
        let (line, reason) = entry_error("a@b,Error: server busy\n");
        assert_eq!(line, 1);
        assert!(reason.contains("errors"), "{reason}");
    }

    #[test]
    fn json_object_book() {
        let book =
            parse(r#"{"yoda@dagobah.org": "Yoda", "Leia@Alderaan.org": "Leia Organa"}"#).unwrap();
        assert_eq!(book.lookup("leia@alderaan.org"), Some("Leia Organa"));
        assert_eq!(book.len(), 2);
    }

    #[test]
    fn json_errors_name_the_line_of_the_bad_entry() {
        let long = "n".repeat(200);
        let (line, reason) = entry_error(&format!(
            "{{\n  \"a@b\": \"A\",\n  \"c@d\": \"{long}\",\n  \"e@f\": \"E\"\n}}"
        ));
        assert_eq!(line, 3);
        assert!(reason.contains("200 bytes"), "{reason}");
        assert!(!reason.contains("column"), "{reason}");
        let (line, _) = entry_error("{\n  \"a@b\": 5\n}");
        assert_eq!(line, 2);
        let (line, _) = entry_error("{\n  \"a@b\": \"A\"\n} trailing");
        assert_eq!(line, 3);
    }

    #[test]
    fn an_empty_book_is_refused() {
        assert!(matches!(parse("# nothing\n"), Err(BookError::Empty { .. })));
        assert!(matches!(parse("{}"), Err(BookError::Empty { .. })));
    }

    #[test]
    fn a_missing_file_names_the_path() {
        let err = AddressBook::load(Path::new("/nonexistent/book.csv")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/book.csv"), "{err}");
    }
}
