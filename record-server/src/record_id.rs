//! Student ids, checked before they name a file.

use std::fmt;

use thiserror::Error;

/// The longest id accepted.
pub const MAX_ID_LEN: usize = 32;

/// Why a `client_id` was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("Invalid client id {0:?}: use 1 to 32 characters from A-Z, a-z, 0-9, '_' and '-'.")]
pub struct InvalidId(pub String);

/// A client id that is safe as a file name: 1 to [`MAX_ID_LEN`] characters of `[A-Za-z0-9_-]`,
/// so never empty, never a path, never hidden, never `.` or `..`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordId(String);

impl RecordId {
    /// Checks `id`.
    pub fn parse(id: &str) -> Result<RecordId, InvalidId> {
        let allowed = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
        if id.is_empty() || id.len() > MAX_ID_LEN || !id.chars().all(allowed) {
            return Err(InvalidId(id.to_owned()));
        }
        Ok(RecordId(id.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name of the id's record file, `<id>.txt`.
    pub fn file_name(&self) -> String {
        format!("{}.txt", self.0)
    }

    /// The id a record file name stands for, if it is `<valid id>.txt`.
    pub fn from_file_name(name: &str) -> Option<RecordId> {
        RecordId::parse(name.strip_suffix(".txt")?).ok()
    }
}

impl fmt::Display for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn student_numbers_and_plain_names_are_ids() {
        for id in ["150210710", "a", "Z_9-x", &"7".repeat(MAX_ID_LEN)] {
            assert_eq!(RecordId::parse(id).unwrap().as_str(), id);
        }
    }

    #[test]
    fn paths_and_odd_characters_are_refused() {
        let long = "7".repeat(MAX_ID_LEN + 1);
        for id in [
            "",
            ".",
            "..",
            "../etc/passwd",
            "a/b",
            "a\\b",
            ".hidden",
            "a b",
            "a\0",
            "ı",
            "x.txt",
            &long,
        ] {
            let err = RecordId::parse(id).unwrap_err();
            assert!(err.to_string().starts_with("Invalid client id"), "{err}");
        }
    }

    #[test]
    fn file_names_map_back_to_ids() {
        let id = RecordId::parse("150999901").unwrap();
        assert_eq!(id.file_name(), "150999901.txt");
        assert_eq!(RecordId::from_file_name("150999901.txt"), Some(id));
        assert_eq!(RecordId::from_file_name("150999901.json"), None);
        assert_eq!(RecordId::from_file_name(".x.txt"), None);
    }
}
