//! JSON written exactly as Python's `json.dumps` writes it with its defaults.
//!
//! The seed's programs exchange `json.dumps` output: `", "` between items, `": "` after keys, and
//! `ensure_ascii`, which escapes every character outside printable ASCII as `\uXXXX` (lowercase
//! hex, UTF-16 surrogate pairs past the BMP). Writing the same bytes lets tests compare our
//! responses with the seed's byte for byte.

use std::io;

use serde::Serialize;
use serde_json::ser::{CompactFormatter, Formatter, Serializer};

/// Serializes `value` to the bytes `json.dumps(value)` would produce.
pub fn to_python_json<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(128);
    let mut serializer = Serializer::with_formatter(&mut out, PythonFormatter);
    value.serialize(&mut serializer)?;
    Ok(out)
}

/// A `serde_json` formatter with `json.dumps`'s separators and `ensure_ascii` escaping.
#[derive(Debug, Clone, Copy, Default)]
pub struct PythonFormatter;

impl Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }

    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }

    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut printable_from = 0;
        for (at, ch) in fragment.char_indices() {
            if (' '..='~').contains(&ch) {
                continue;
            }
            w.write_all(&fragment.as_bytes()[printable_from..at])?;
            write_unicode_escape(w, ch)?;
            printable_from = at + ch.len_utf8();
        }
        w.write_all(&fragment.as_bytes()[printable_from..])
    }

    fn write_char_escape<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        escape: serde_json::ser::CharEscape,
    ) -> io::Result<()> {
        // serde_json's escapes for quotes, backslashes and control characters are Python's too.
        CompactFormatter.write_char_escape(w, escape)
    }
}

fn write_unicode_escape<W: ?Sized + io::Write>(w: &mut W, ch: char) -> io::Result<()> {
    let mut units = [0u16; 2];
    for unit in ch.encode_utf16(&mut units) {
        write!(w, "\\u{unit:04x}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dumps(value: &serde_json::Value) -> String {
        String::from_utf8(to_python_json(value).unwrap()).unwrap()
    }

    #[test]
    fn separators_match_json_dumps() {
        // serde_json's `json!` keeps keys sorted; `json.dumps(dict(sorted(...)))` gives the same.
        assert_eq!(
            dumps(&json!({"a": 1, "b": [1, 2], "c": {}})),
            r#"{"a": 1, "b": [1, 2], "c": {}}"#
        );
    }

    #[test]
    fn non_ascii_is_escaped_like_ensure_ascii() {
        // json.dumps("Fatih Baskın, Tekirdağ, café, 😀, \x7f") in Python 3.11:
        assert_eq!(
            dumps(&json!("Fatih Baskın, Tekirdağ, café, 😀, \u{7f}")),
            r#""Fatih Bask\u0131n, Tekirda\u011f, caf\u00e9, \ud83d\ude00, \u007f""#
        );
    }

    #[test]
    fn control_characters_are_escaped_like_python() {
        // json.dumps("a\"b\\c\nd\re\tf\x08g\x0ch\x01") in Python 3.11:
        assert_eq!(
            dumps(&json!("a\"b\\c\nd\re\tf\u{8}g\u{c}h\u{1}")),
            r#""a\"b\\c\nd\re\tf\bg\fh\u0001""#
        );
    }
}
