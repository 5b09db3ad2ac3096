//! Reading big-endian fields off the front of a binary message, failing (never panicking) when
//! it runs short: the one reader under the chat transfer's control frames and the peers'
//! session messages, each of which adds its own strings and checks on top.

use std::fmt;

/// A message ended before a field did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooShort {
    /// Bytes the field needed.
    pub(crate) needed: usize,
    /// Bytes that were left.
    pub(crate) left: usize,
}

impl fmt::Display for TooShort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the message ends early ({} bytes left, {} needed)",
            self.left, self.needed
        )
    }
}

/// The fields of a message, read from the front.
#[derive(Debug)]
pub(crate) struct FieldReader<'a> {
    rest: &'a [u8],
}

impl<'a> FieldReader<'a> {
    /// A reader at the start of `message`.
    pub(crate) fn new(message: &'a [u8]) -> FieldReader<'a> {
        FieldReader { rest: message }
    }

    /// The next `n` bytes.
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], TooShort> {
        if self.rest.len() < n {
            return Err(TooShort {
                needed: n,
                left: self.rest.len(),
            });
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    /// The next `N` bytes as an array.
    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], TooShort> {
        let mut array = [0; N];
        array.copy_from_slice(self.take(N)?);
        Ok(array)
    }

    /// A byte.
    pub(crate) fn u8(&mut self) -> Result<u8, TooShort> {
        Ok(self.array::<1>()?[0])
    }

    /// A big-endian u16.
    pub(crate) fn u16(&mut self) -> Result<u16, TooShort> {
        self.array().map(u16::from_be_bytes)
    }

    /// A big-endian u32.
    pub(crate) fn u32(&mut self) -> Result<u32, TooShort> {
        self.array().map(u32::from_be_bytes)
    }

    /// A big-endian u64.
    pub(crate) fn u64(&mut self) -> Result<u64, TooShort> {
        self.array().map(u64::from_be_bytes)
    }

    /// Bytes not read yet.
    pub(crate) fn remaining(&self) -> usize {
        self.rest.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_read_big_endian_in_order() {
        let mut reader = FieldReader::new(&[1, 0, 2, 0, 0, 0, 3, 9]);
        assert_eq!(reader.u8(), Ok(1));
        assert_eq!(reader.u16(), Ok(2));
        assert_eq!(reader.u32(), Ok(3));
        assert_eq!(reader.remaining(), 1);
    }

    #[test]
    fn a_short_message_says_how_short_and_consumes_nothing() {
        let mut reader = FieldReader::new(&[0, 0, 1]);
        assert_eq!(reader.u32(), Err(TooShort { needed: 4, left: 3 }));
        assert_eq!(reader.remaining(), 3);
        assert_eq!(
            TooShort { needed: 4, left: 3 }.to_string(),
            "the message ends early (3 bytes left, 4 needed)"
        );
    }
}
