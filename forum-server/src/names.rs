//! Thread titles, file names, usernames and message texts, checked before they touch a file.
//!
//! A title names a file in the threads folder and prefixes its uploads (`<title>-<file>`), so it
//! may not contain `-`: that keeps every upload name splitting back into exactly one title and
//! one file name. Nothing may contain a path separator, start with a dot, contain whitespace or
//! control characters (arguments are separated by spaces, files are line-based), or be longer
//! than its bound.

use thiserror::Error;

/// The longest title, in bytes.
pub const MAX_TITLE_LEN: usize = 64;
/// The longest file name, in bytes.
pub const MAX_FILE_NAME_LEN: usize = 128;
/// The longest username, in bytes.
pub const MAX_USERNAME_LEN: usize = 32;
/// The longest message text, in bytes.
pub const MAX_TEXT_LEN: usize = 4096;

/// A name or text that was refused, with the reason a user reads.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0}")]
pub struct InvalidName(pub String);

/// Checks a thread title.
pub fn check_title(title: &str) -> Result<(), InvalidName> {
    check_word("Thread title", title, MAX_TITLE_LEN)?;
    if title.contains('-') {
        return Err(InvalidName(format!(
            "Thread title {title:?} may not contain '-'"
        )));
    }
    Ok(())
}

/// Checks the name of a file to upload or download.
pub fn check_file_name(name: &str) -> Result<(), InvalidName> {
    check_word("File name", name, MAX_FILE_NAME_LEN)
}

/// Checks a username. A `:` would make message lines (`N user: text`) ambiguous.
pub fn check_username(name: &str) -> Result<(), InvalidName> {
    check_word("Username", name, MAX_USERNAME_LEN)?;
    if name.contains(':') {
        return Err(InvalidName(format!(
            "Username {name:?} may not contain ':'"
        )));
    }
    Ok(())
}

/// Checks a password: it is stored as a hash, but the credentials file is line-based and
/// space-separated, as the assignment's was.
pub fn check_password(password: &str) -> Result<(), InvalidName> {
    if password.is_empty() || password.len() > 256 {
        return Err(InvalidName("A password is 1 to 256 bytes".into()));
    }
    if password
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(InvalidName(
            "A password may not contain spaces or control characters".into(),
        ));
    }
    Ok(())
}

/// Checks a message text: one line, not empty, bounded.
pub fn check_text(text: &str) -> Result<(), InvalidName> {
    if text.trim().is_empty() {
        return Err(InvalidName("A message may not be empty".into()));
    }
    if text.len() > MAX_TEXT_LEN {
        return Err(InvalidName(format!(
            "A message is at most {MAX_TEXT_LEN} bytes"
        )));
    }
    if text.chars().any(char::is_control) {
        return Err(InvalidName(
            "A message may not contain line breaks or control characters".into(),
        ));
    }
    Ok(())
}

fn check_word(what: &str, word: &str, max: usize) -> Result<(), InvalidName> {
    let refuse = |why: &str| Err(InvalidName(format!("{what} {word:?} {why}")));
    if word.is_empty() {
        return Err(InvalidName(format!("{what} may not be empty")));
    }
    if word.len() > max {
        return refuse(&format!("is longer than {max} bytes"));
    }
    if word.starts_with('.') {
        return refuse("may not start with '.'");
    }
    if word.contains(['/', '\\']) {
        return refuse("may not contain a path separator");
    }
    if word.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return refuse("may not contain spaces or control characters");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_assignments_names_pass() {
        check_title("3331").unwrap();
        check_title("9331_forum").unwrap();
        check_file_name("test.exe").unwrap();
        check_file_name("lecture-notes.pdf").unwrap();
        check_username("Obi-wan").unwrap();
        check_text("Networks are fun, aren't they?").unwrap();
        check_password("sjdK3!a").unwrap();
    }

    #[test]
    fn paths_dots_separators_and_oversize_are_refused_with_reasons() {
        let long = "x".repeat(MAX_TITLE_LEN + 1);
        for (title, why) in [
            ("", "may not be empty"),
            ("../etc", "may not start with '.'"),
            (".hidden", "may not start with '.'"),
            ("a/b", "path separator"),
            ("a\\b", "path separator"),
            ("a b", "spaces"),
            ("a-b", "may not contain '-'"),
            (long.as_str(), "longer than 64 bytes"),
        ] {
            let err = check_title(title).unwrap_err().to_string();
            assert!(err.contains(why), "{title:?}: {err}");
        }
        assert!(check_file_name("a/../../b").is_err());
        assert!(check_text("two\nlines").is_err());
        assert!(check_text("   ").is_err());
        assert!(check_password("has space").is_err());
    }
}
