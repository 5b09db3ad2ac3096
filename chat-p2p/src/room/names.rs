//! Usernames in the room: what a client's first frame must hold.

use thiserror::Error;

/// The longest username, in bytes.
pub const MAX_USERNAME_BYTES: usize = 32;

/// The name the room itself speaks under (refusals, and joins and leaves with `--announce`);
/// no client may take it.
pub const SERVER_NAME: &str = "server";

/// Why a username is refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NameError {
    /// Nothing at all.
    #[error("the username is empty")]
    Empty,
    /// Longer than [`MAX_USERNAME_BYTES`].
    #[error("the username is {0} bytes long, more than {MAX_USERNAME_BYTES}")]
    TooLong(usize),
    /// Not UTF-8.
    #[error("the username is not UTF-8 text")]
    NotUtf8,
    /// A control character (a newline, a tab, an escape, ...).
    #[error("the username holds the control character {0:?}")]
    ControlCharacter(char),
    /// The room's own name.
    #[error("the username {SERVER_NAME:?} is the room's own")]
    Reserved,
}

/// The username in `bytes`, if the room accepts it: non-empty, at most [`MAX_USERNAME_BYTES`]
/// bytes of UTF-8 with no control characters, and not [`SERVER_NAME`].
pub fn check_username(bytes: &[u8]) -> Result<&str, NameError> {
    if bytes.is_empty() {
        return Err(NameError::Empty);
    }
    if bytes.len() > MAX_USERNAME_BYTES {
        return Err(NameError::TooLong(bytes.len()));
    }
    let name = std::str::from_utf8(bytes).map_err(|_| NameError::NotUtf8)?;
    if let Some(control) = name.chars().find(|c| c.is_control()) {
        return Err(NameError::ControlCharacter(control));
    }
    if name == SERVER_NAME {
        return Err(NameError::Reserved);
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_every_script_are_welcome_and_bad_ones_say_why() {
        assert_eq!(check_username(b"alice"), Ok("alice"));
        assert_eq!(check_username("Ørjan 李".as_bytes()), Ok("Ørjan 李"));
        assert_eq!(check_username(&[b'a'; 32]), Ok("a".repeat(32).as_str()));
        assert_eq!(check_username(b""), Err(NameError::Empty));
        assert_eq!(check_username(&[b'a'; 33]), Err(NameError::TooLong(33)));
        assert_eq!(check_username(b"\xff\xfe"), Err(NameError::NotUtf8));
        assert_eq!(
            check_username(b"bob\n"),
            Err(NameError::ControlCharacter('\n'))
        );
        assert_eq!(
            check_username("a\u{1b}[31m".as_bytes()),
            Err(NameError::ControlCharacter('\u{1b}'))
        );
        assert_eq!(check_username(b"server"), Err(NameError::Reserved));
    }
}
