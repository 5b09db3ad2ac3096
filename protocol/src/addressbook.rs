//! The address book's message (seed 002): a Python `struct.Struct("!cb")` header, then a UTF-8 body.
//!
//! Wire format, byte by byte:
//!
//! | offset | size | meaning                                                                    |
//! |--------|------|----------------------------------------------------------------------------|
//! | 0      | 1    | kind, an ASCII letter: `Q` (query, client to server) or `R` (response)      |
//! | 1      | 1    | body length as a **signed** byte; `0..=127`, a negative value is a violation |
//! | 2      | len  | the body, UTF-8: the e-mail in a query, the owner's name or an error in a response |
//!
//! So a hit for `luke@gmail.com` is answered with `b"R\x0eLuke Skywalker"`, a miss with
//! `b"R\x09Error 404"` ([`NOT_FOUND`]), and a header the server cannot understand with
//! `R` + [`UNKNOWN_PROTOCOL`], after which the server closes the connection.
//!
//! The seed's client sends the header and the body in two writes and reads the body one byte at a
//! time; none of that matters to a stream decoder, which waits for the whole frame.

use bytes::{Buf, BufMut, BytesMut};
use thiserror::Error;
use tokio_util::codec::{Decoder, Encoder};

/// Bytes in the header: the kind and the signed length.
pub const HEADER_LEN: usize = 2;
/// The longest body a header can announce (`i8::MAX`).
pub const MAX_BODY_LEN: usize = i8::MAX as usize;
/// The body of a response to an e-mail that is not in the book; the seed's client compares it.
pub const NOT_FOUND: &str = "Error 404";
/// The body of the response to a header the server does not understand.
pub const UNKNOWN_PROTOCOL: &str = "Error: Unknown message protocol";
/// The body of the answer to a connection over the server's limit, which is then closed. Like
/// the seed's own errors it starts with `Error`, so a seed client prints it rather than taking it
/// for a name.
pub const SERVER_BUSY: &str = "Error: server busy";

/// What a message is: the first header byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `Q`: a client asks whose an e-mail is.
    Query,
    /// `R`: the server answers.
    Response,
}

impl Kind {
    /// The header byte for this kind.
    pub const fn byte(self) -> u8 {
        match self {
            Kind::Query => b'Q',
            Kind::Response => b'R',
        }
    }

    /// The kind a header byte stands for, if any.
    pub const fn from_byte(byte: u8) -> Option<Kind> {
        match byte {
            b'Q' => Some(Kind::Query),
            b'R' => Some(Kind::Response),
            _ => None,
        }
    }
}

/// Everything that can go wrong reading or writing address-book messages.
#[derive(Debug, Error)]
pub enum AddressBookError {
    /// The peer sent a header whose first byte is not `Q` or `R`.
    #[error("protocol violation: unknown message type byte '{}' (expected 'Q' or 'R')", .0.escape_ascii())]
    UnknownKind(u8),
    /// The peer sent a header whose signed length byte is negative.
    #[error("protocol violation: negative body length {0} in the header")]
    NegativeLength(i8),
    /// The peer sent a body that is not UTF-8.
    #[error("protocol violation: the message body is not valid UTF-8")]
    InvalidUtf8,
    /// Local misuse: a body longer than the signed length byte can announce.
    #[error(
        "a message body of {len} bytes does not fit the header's length byte (at most {MAX_BODY_LEN})"
    )]
    BodyTooLong {
        /// The length of the rejected body in bytes.
        len: usize,
    },
    /// The transport failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl AddressBookError {
    /// True when the peer broke the protocol (as opposed to local misuse or an I/O failure): the
    /// server answers such a peer with [`UNKNOWN_PROTOCOL`] and closes the connection.
    pub fn is_protocol_violation(&self) -> bool {
        matches!(
            self,
            AddressBookError::UnknownKind(_)
                | AddressBookError::NegativeLength(_)
                | AddressBookError::InvalidUtf8
        )
    }
}

/// One message: its kind and a body that is guaranteed to fit the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    kind: Kind,
    body: String,
}

impl Message {
    /// A message of the given kind, or [`AddressBookError::BodyTooLong`] past 127 bytes.
    pub fn new(kind: Kind, body: impl Into<String>) -> Result<Message, AddressBookError> {
        let body = body.into();
        check_body_len(&body)?;
        Ok(Message { kind, body })
    }

    /// A query for an e-mail address.
    pub fn query(email: impl Into<String>) -> Result<Message, AddressBookError> {
        Message::new(Kind::Query, email)
    }

    /// A response carrying a name or an error text.
    pub fn response(body: impl Into<String>) -> Result<Message, AddressBookError> {
        Message::new(Kind::Response, body)
    }

    /// The response to an e-mail that is not in the book.
    pub fn not_found() -> Message {
        Message {
            kind: Kind::Response,
            body: NOT_FOUND.to_owned(),
        }
    }

    /// The response to a header the server does not understand.
    pub fn unknown_protocol() -> Message {
        Message {
            kind: Kind::Response,
            body: UNKNOWN_PROTOCOL.to_owned(),
        }
    }

    /// Whether this is a query or a response.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The body text.
    pub fn body(&self) -> &str {
        &self.body
    }

    /// The body text, by value.
    pub fn into_body(self) -> String {
        self.body
    }

    /// Appends the header and body to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) {
        dst.reserve(HEADER_LEN + self.body.len());
        dst.put_u8(self.kind.byte());
        // `check_body_len` guaranteed the length fits in 0..=127.
        dst.put_u8(self.body.len() as u8);
        dst.put_slice(self.body.as_bytes());
    }

    /// The message as bytes on the wire.
    pub fn to_bytes(&self) -> BytesMut {
        let mut out = BytesMut::new();
        self.encode(&mut out);
        out
    }
}

/// Fails with [`AddressBookError::BodyTooLong`] when `body` cannot be announced by the header.
pub fn check_body_len(body: &str) -> Result<(), AddressBookError> {
    if body.len() > MAX_BODY_LEN {
        return Err(AddressBookError::BodyTooLong { len: body.len() });
    }
    Ok(())
}

/// Reads a header: its kind and the body length that follows it.
pub fn parse_header(header: [u8; HEADER_LEN]) -> Result<(Kind, usize), AddressBookError> {
    let kind = Kind::from_byte(header[0]).ok_or(AddressBookError::UnknownKind(header[0]))?;
    let len = header[1] as i8;
    if len < 0 {
        return Err(AddressBookError::NegativeLength(len));
    }
    Ok((kind, len as usize))
}

/// The `tokio_util` codec for [`Message`]s; a frame is at most 129 bytes, so it is bounded by
/// construction.
#[derive(Debug, Clone, Copy, Default)]
pub struct AddressBookCodec;

impl Decoder for AddressBookCodec {
    type Item = Message;
    type Error = AddressBookError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Message>, AddressBookError> {
        if src.len() < HEADER_LEN {
            src.reserve(HEADER_LEN - src.len());
            return Ok(None);
        }
        let (kind, len) = parse_header([src[0], src[1]])?;
        if src.len() < HEADER_LEN + len {
            src.reserve(HEADER_LEN + len - src.len());
            return Ok(None);
        }
        // Copied straight out of the buffer (no split, so no shared allocation to count).
        let body = std::str::from_utf8(&src[HEADER_LEN..HEADER_LEN + len]).map(str::to_owned);
        src.advance(HEADER_LEN + len);
        let body = body.map_err(|_| AddressBookError::InvalidUtf8)?;
        Ok(Some(Message { kind, body }))
    }
}

impl Encoder<Message> for AddressBookCodec {
    type Error = AddressBookError;

    fn encode(&mut self, message: Message, dst: &mut BytesMut) -> Result<(), AddressBookError> {
        message.encode(dst);
        Ok(())
    }
}

impl Encoder<&Message> for AddressBookCodec {
    type Error = AddressBookError;

    fn encode(&mut self, message: &Message, dst: &mut BytesMut) -> Result<(), AddressBookError> {
        message.encode(dst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;
    use proptest::prelude::*;

    fn decode_all(bytes: &[u8]) -> Result<Vec<Message>, AddressBookError> {
        testing::decode_chunked(AddressBookCodec, bytes, &[bytes.len()])
    }

    #[test]
    fn seed_vectors_are_byte_exact() {
        let hit = Message::response("Luke Skywalker").unwrap();
        assert_eq!(&hit.to_bytes()[..], b"R\x0eLuke Skywalker");
        assert_eq!(&Message::not_found().to_bytes()[..], b"R\x09Error 404");
        assert_eq!(
            &Message::unknown_protocol().to_bytes()[..],
            b"R\x1fError: Unknown message protocol"
        );
        let query = Message::query("luke@gmail.com").unwrap();
        assert_eq!(&query.to_bytes()[..], b"Q\x0eluke@gmail.com");
    }

    #[test]
    fn decodes_the_seed_query() {
        let messages = decode_all(b"Q\x0eluke@gmail.com").unwrap();
        assert_eq!(messages, vec![Message::query("luke@gmail.com").unwrap()]);
    }

    #[test]
    fn empty_body_is_a_valid_frame() {
        assert_eq!(
            decode_all(b"Q\x00").unwrap(),
            vec![Message::query("").unwrap()]
        );
    }

    #[test]
    fn a_stream_split_at_every_byte_decodes_the_same() {
        let mut stream = BytesMut::new();
        let sent = [
            Message::query("luke@gmail.com").unwrap(),
            Message::response("Jihoon Ryoo").unwrap(),
            Message::query("").unwrap(),
            Message::query("ünïcödé@example.org").unwrap(),
        ];
        for message in &sent {
            message.encode(&mut stream);
        }
        testing::assert_decodes_at_every_split(|| AddressBookCodec, &stream, &sent);
    }

    #[test]
    fn partial_frames_wait_for_more_bytes() {
        let mut buf = BytesMut::from(&b"Q"[..]);
        assert!(AddressBookCodec.decode(&mut buf).unwrap().is_none());
        buf.extend_from_slice(b"\x05abc");
        assert!(AddressBookCodec.decode(&mut buf).unwrap().is_none());
        assert_eq!(buf.len(), 5, "nothing consumed while incomplete");
    }

    #[test]
    fn oversize_body_is_refused_with_its_length() {
        let err = Message::query("x".repeat(128)).unwrap_err();
        assert!(matches!(err, AddressBookError::BodyTooLong { len: 128 }));
        assert!(err.to_string().contains("128 bytes"), "{err}");
        assert!(Message::query("x".repeat(127)).is_ok());
    }

    #[test]
    fn unknown_kind_is_a_violation_naming_the_byte() {
        let err = decode_all(b"X\x05hello").unwrap_err();
        assert!(matches!(err, AddressBookError::UnknownKind(b'X')));
        assert!(err.is_protocol_violation());
        assert!(err.to_string().contains("'X'"), "{err}");
    }

    #[test]
    fn negative_length_is_a_violation() {
        let err = decode_all(b"Q\xff").unwrap_err();
        assert!(matches!(err, AddressBookError::NegativeLength(-1)));
        assert!(err.is_protocol_violation());
        let err = decode_all(b"Q\x80").unwrap_err();
        assert!(matches!(err, AddressBookError::NegativeLength(-128)));
    }

    #[test]
    fn non_utf8_body_is_a_violation() {
        let err = decode_all(b"Q\x02\xff\xfe").unwrap_err();
        assert!(matches!(err, AddressBookError::InvalidUtf8));
        assert!(err.is_protocol_violation());
    }

    fn any_kind() -> impl Strategy<Value = Kind> {
        prop_oneof![Just(Kind::Query), Just(Kind::Response)]
    }

    fn any_message() -> impl Strategy<Value = Message> {
        // Strings of up to 127 bytes: at most 31 chars of up to 4 bytes each.
        (any_kind(), ".{0,31}").prop_map(|(kind, body)| Message::new(kind, body).unwrap())
    }

    proptest! {
        #[test]
        fn messages_round_trip_through_any_chunking(
            messages in prop::collection::vec(any_message(), 0..20),
            chunk_sizes in prop::collection::vec(1usize..64, 1..16),
        ) {
            let mut stream = BytesMut::new();
            for message in &messages {
                AddressBookCodec.encode(message, &mut stream).unwrap();
            }
            let decoded = testing::decode_chunked(AddressBookCodec, &stream, &chunk_sizes).unwrap();
            prop_assert_eq!(decoded, messages);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = AddressBookCodec.decode(&mut buf) {}
        }

        #[test]
        fn every_header_is_either_understood_or_a_violation(header in any::<[u8; 2]>()) {
            match parse_header(header) {
                Ok((kind, len)) => {
                    prop_assert_eq!(kind.byte(), header[0]);
                    prop_assert!(len <= MAX_BODY_LEN);
                }
                Err(err) => prop_assert!(err.is_protocol_violation()),
            }
        }
    }
}
