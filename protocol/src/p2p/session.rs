//! The messages two peers exchange inside a session, each one message of the reliable-datagram
//! layer (so they arrive exactly once and in order).
//!
//! Every message is big-endian, its first byte the type. A *string* is a u16 byte length, then
//! that many bytes of UTF-8; *data* is a u32 byte length, then the bytes. A message ends with
//! its last field: trailing bytes make it invalid.
//!
//! | type | message          | fields after the type byte                                                           |
//! |------|------------------|--------------------------------------------------------------------------------------|
//! | 1    | `chat`           | text: string (≤ 16384 bytes)                                                         |
//! | 2    | `file_offer`     | id: u32, name: string (a file name), size: u64, sha256: 32 bytes                     |
//! | 3    | `file_chunk`     | id: u32, offset: u64, data: data (≤ 65536 bytes)                                     |
//! | 4    | `file_abort`     | id: u32, reason: string (≤ 1024 bytes)                                               |
//! | 5    | `file_result`    | id: u32, saved: u8 (0 no, 1 yes), detail: string (≤ 1024 bytes)                      |
//! | 6    | `stream_start`   | id: u32, name: string (a file name), rate: u32 (bytes/s), chunk_size: u32 (bytes)    |
//! | 7    | `stream_end`     | id: u32, sent: u32                                                                   |
//! | 8    | `stream_report`  | id: u32, sent: u32, received: u32, lost: u32, duplicates: u32, reordered: u32, bytes: u64, jitter_us: u32 |
//!
//! A file name is checked with [`crate::chat_transfer::check_file_name`]: not empty, at most
//! 200 bytes, no leading dot, no `/`, `\`, `:` or control character.
//!
//! [`SessionMessage::encode`] does not check the bounds: a message past them (which a correct
//! sender never builds) is still written, and the receiver's [`SessionMessage::decode`]
//! rejects it as [`SessionMessageError::Invalid`]. A string longer than a u16 length can say is
//! cut to 65535 bytes, which is past every bound, so it is rejected too.

use bytes::{BufMut, Bytes, BytesMut};
use thiserror::Error;

use crate::chat_transfer::check_file_name;
use crate::fields::{FieldReader, TooShort};

use super::stream::StreamReport;

/// The longest chat text, in bytes.
pub const MAX_TEXT_BYTES: usize = 16 * 1024;
/// The largest file chunk, in bytes.
pub const MAX_CHUNK_BYTES: usize = 64 * 1024;
/// The longest reason or detail text, in bytes.
pub const MAX_REASON_BYTES: usize = 1024;

/// A SHA-256 digest.
pub type Digest = [u8; 32];

/// A message inside a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionMessage {
    /// A line of chat.
    Chat {
        /// The text (UTF-8).
        text: String,
    },
    /// A file follows, in [`SessionMessage::FileChunk`]s in order.
    FileOffer {
        /// The transfer's number, chosen by the sender.
        id: u32,
        /// The file's name (checked with [`crate::chat_transfer::check_file_name`]).
        name: String,
        /// Its size in bytes.
        size: u64,
        /// Its SHA-256.
        sha256: Digest,
    },
    /// A piece of a file.
    FileChunk {
        /// The transfer.
        id: u32,
        /// Where the piece goes.
        offset: u64,
        /// The bytes.
        data: Bytes,
    },
    /// The sender gave up on a transfer.
    FileAbort {
        /// The transfer.
        id: u32,
        /// Why.
        reason: String,
    },
    /// The receiver's verdict on a transfer.
    FileResult {
        /// The transfer.
        id: u32,
        /// Whether the file was saved intact.
        saved: bool,
        /// The name it was saved under, or what went wrong.
        detail: String,
    },
    /// A media stream begins; its chunks travel as [`super::secure::DatagramKind::Stream`]
    /// datagrams.
    StreamStart {
        /// The stream's number, chosen by the sender.
        id: u32,
        /// The streamed file's name.
        name: String,
        /// Its real-time rate, bytes per second.
        rate: u32,
        /// Payload bytes per chunk.
        chunk_size: u32,
    },
    /// The stream's last chunk has been sent.
    StreamEnd {
        /// The stream.
        id: u32,
        /// Chunks sent.
        sent: u32,
    },
    /// The receiver's account of a stream, sent back to the sender.
    StreamReport {
        /// The stream.
        id: u32,
        /// What arrived.
        report: StreamReport,
    },
}

/// Why bytes are not a session message.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SessionMessageError {
    /// The message is shorter than its fields.
    #[error("the message is truncated")]
    Truncated,
    /// The first byte names no message.
    #[error("unknown message type {0}")]
    UnknownType(u8),
    /// A field is out of bounds or not valid (the text says which).
    #[error("invalid field: {0}")]
    Invalid(String),
}

/// The `kind()` of every message, in type-byte order (`KINDS[t - 1]` is type `t`).
pub const KINDS: [&str; 8] = [
    "chat",
    "file_offer",
    "file_chunk",
    "file_abort",
    "file_result",
    "stream_start",
    "stream_end",
    "stream_report",
];

/// Type byte of [`SessionMessage::Chat`].
const CHAT: u8 = 1;
/// Type byte of [`SessionMessage::FileOffer`].
const FILE_OFFER: u8 = 2;
/// Type byte of [`SessionMessage::FileChunk`].
const FILE_CHUNK: u8 = 3;
/// Type byte of [`SessionMessage::FileAbort`].
const FILE_ABORT: u8 = 4;
/// Type byte of [`SessionMessage::FileResult`].
const FILE_RESULT: u8 = 5;
/// Type byte of [`SessionMessage::StreamStart`].
const STREAM_START: u8 = 6;
/// Type byte of [`SessionMessage::StreamEnd`].
const STREAM_END: u8 = 7;
/// Type byte of [`SessionMessage::StreamReport`].
const STREAM_REPORT: u8 = 8;

impl SessionMessage {
    /// The message's type byte.
    fn type_byte(&self) -> u8 {
        match self {
            SessionMessage::Chat { .. } => CHAT,
            SessionMessage::FileOffer { .. } => FILE_OFFER,
            SessionMessage::FileChunk { .. } => FILE_CHUNK,
            SessionMessage::FileAbort { .. } => FILE_ABORT,
            SessionMessage::FileResult { .. } => FILE_RESULT,
            SessionMessage::StreamStart { .. } => STREAM_START,
            SessionMessage::StreamEnd { .. } => STREAM_END,
            SessionMessage::StreamReport { .. } => STREAM_REPORT,
        }
    }

    /// The message's name, as in [`KINDS`] and the protocol's documentation.
    pub fn kind(&self) -> &'static str {
        KINDS[usize::from(self.type_byte() - 1)]
    }

    /// The message's bytes (see the module docs for the layout).
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.encoded_len_hint());
        out.put_u8(self.type_byte());
        match self {
            SessionMessage::Chat { text } => put_string(&mut out, text),
            SessionMessage::FileOffer {
                id,
                name,
                size,
                sha256,
            } => {
                out.put_u32(*id);
                put_string(&mut out, name);
                out.put_u64(*size);
                out.put_slice(sha256);
            }
            SessionMessage::FileChunk { id, offset, data } => {
                out.put_u32(*id);
                out.put_u64(*offset);
                put_data(&mut out, data);
            }
            SessionMessage::FileAbort { id, reason } => {
                out.put_u32(*id);
                put_string(&mut out, reason);
            }
            SessionMessage::FileResult { id, saved, detail } => {
                out.put_u32(*id);
                out.put_u8(u8::from(*saved));
                put_string(&mut out, detail);
            }
            SessionMessage::StreamStart {
                id,
                name,
                rate,
                chunk_size,
            } => {
                out.put_u32(*id);
                put_string(&mut out, name);
                out.put_u32(*rate);
                out.put_u32(*chunk_size);
            }
            SessionMessage::StreamEnd { id, sent } => {
                out.put_u32(*id);
                out.put_u32(*sent);
            }
            SessionMessage::StreamReport { id, report } => {
                out.put_u32(*id);
                put_report(&mut out, report);
            }
        }
        out.freeze()
    }

    /// About how many bytes [`SessionMessage::encode`] writes, to allocate once.
    fn encoded_len_hint(&self) -> usize {
        let variable = match self {
            SessionMessage::Chat { text } => text.len(),
            SessionMessage::FileOffer { name, .. } | SessionMessage::StreamStart { name, .. } => {
                name.len()
            }
            SessionMessage::FileChunk { data, .. } => data.len(),
            SessionMessage::FileAbort { reason, .. } => reason.len(),
            SessionMessage::FileResult { detail, .. } => detail.len(),
            SessionMessage::StreamEnd { .. } | SessionMessage::StreamReport { .. } => 0,
        };
        64 + variable
    }

    /// The message in `message`, checked against every bound. Bounded: text ≤
    /// [`MAX_TEXT_BYTES`], chunk data ≤ [`MAX_CHUNK_BYTES`], reason and detail ≤
    /// [`MAX_REASON_BYTES`], names checked with [`check_file_name`], UTF-8 checked. A
    /// `file_chunk`'s data is a zero-copy slice of `message`; trailing bytes are an error.
    pub fn decode(message: Bytes) -> Result<SessionMessage, SessionMessageError> {
        let mut reader = Reader::new(&message);
        let decoded = match reader.u8()? {
            CHAT => SessionMessage::Chat {
                text: reader.string("text", MAX_TEXT_BYTES)?,
            },
            FILE_OFFER => decode_file_offer(&mut reader)?,
            FILE_CHUNK => SessionMessage::FileChunk {
                id: reader.u32()?,
                offset: reader.u64()?,
                data: reader.data("chunk data", MAX_CHUNK_BYTES)?,
            },
            FILE_ABORT => SessionMessage::FileAbort {
                id: reader.u32()?,
                reason: reader.string("reason", MAX_REASON_BYTES)?,
            },
            FILE_RESULT => SessionMessage::FileResult {
                id: reader.u32()?,
                saved: reader.flag("saved")?,
                detail: reader.string("detail", MAX_REASON_BYTES)?,
            },
            STREAM_START => decode_stream_start(&mut reader)?,
            STREAM_END => SessionMessage::StreamEnd {
                id: reader.u32()?,
                sent: reader.u32()?,
            },
            STREAM_REPORT => SessionMessage::StreamReport {
                id: reader.u32()?,
                report: decode_report(&mut reader)?,
            },
            unknown => return Err(SessionMessageError::UnknownType(unknown)),
        };
        reader.finish()?;
        Ok(decoded)
    }
}

/// The fields of a `file_offer` after its type byte.
fn decode_file_offer(reader: &mut Reader) -> Result<SessionMessage, SessionMessageError> {
    Ok(SessionMessage::FileOffer {
        id: reader.u32()?,
        name: reader.file_name()?,
        size: reader.u64()?,
        sha256: reader.array()?,
    })
}

/// The fields of a `stream_start` after its type byte.
fn decode_stream_start(reader: &mut Reader) -> Result<SessionMessage, SessionMessageError> {
    Ok(SessionMessage::StreamStart {
        id: reader.u32()?,
        name: reader.file_name()?,
        rate: reader.u32()?,
        chunk_size: reader.u32()?,
    })
}

/// A [`StreamReport`]'s fixed-width fields, in declaration order.
fn decode_report(reader: &mut Reader) -> Result<StreamReport, SessionMessageError> {
    Ok(StreamReport {
        sent: reader.u32()?,
        received: reader.u32()?,
        lost: reader.u32()?,
        duplicates: reader.u32()?,
        reordered: reader.u32()?,
        bytes: reader.u64()?,
        jitter_us: reader.u32()?,
    })
}

/// Writes a [`StreamReport`]'s fields, in declaration order.
fn put_report(out: &mut BytesMut, report: &StreamReport) {
    out.put_u32(report.sent);
    out.put_u32(report.received);
    out.put_u32(report.lost);
    out.put_u32(report.duplicates);
    out.put_u32(report.reordered);
    out.put_u64(report.bytes);
    out.put_u32(report.jitter_us);
}

/// Writes a u16 length and the text, cut to 65535 bytes if longer (which no bound allows, so
/// the receiver rejects it).
fn put_string(out: &mut BytesMut, text: &str) {
    let len = u16::try_from(text.len()).unwrap_or(u16::MAX);
    out.put_u16(len);
    out.put_slice(&text.as_bytes()[..usize::from(len)]);
}

/// Writes a u32 length and the bytes, cut to `u32::MAX` bytes if longer.
fn put_data(out: &mut BytesMut, data: &[u8]) {
    let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
    out.put_u32(len);
    out.put_slice(&data[..len as usize]);
}

/// The fields of a session message: [`FieldReader`]'s, plus its strings, flags and zero-copy
/// data.
struct Reader<'a> {
    /// The whole message, which `data` slices without copying.
    message: &'a Bytes,
    fields: FieldReader<'a>,
}

impl<'a> std::ops::Deref for Reader<'a> {
    type Target = FieldReader<'a>;

    fn deref(&self) -> &FieldReader<'a> {
        &self.fields
    }
}

impl std::ops::DerefMut for Reader<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.fields
    }
}

/// A message too short for its fields.
impl From<TooShort> for SessionMessageError {
    fn from(_: TooShort) -> SessionMessageError {
        SessionMessageError::Truncated
    }
}

impl<'a> Reader<'a> {
    /// A reader at the start of `message`.
    fn new(message: &'a Bytes) -> Reader<'a> {
        Reader {
            message,
            fields: FieldReader::new(message),
        }
    }

    /// A byte that is 0 (false) or 1 (true).
    fn flag(&mut self, field: &str) -> Result<bool, SessionMessageError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(invalid(format!("{field} is {other}, not 0 or 1"))),
        }
    }

    /// A u16-length UTF-8 string of at most `max` bytes.
    fn string(&mut self, field: &str, max: usize) -> Result<String, SessionMessageError> {
        let len = usize::from(self.u16()?);
        check_len(field, len, max)?;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| invalid(format!("{field} is not UTF-8")))
    }

    /// A string that is an acceptable file name.
    fn file_name(&mut self) -> Result<String, SessionMessageError> {
        let name = self.string("name", usize::from(u16::MAX))?;
        check_file_name(&name).map_err(|err| invalid(err.to_string()))?;
        Ok(name)
    }

    /// A u32-length run of at most `max` bytes, zero-copy.
    fn data(&mut self, field: &str, max: usize) -> Result<Bytes, SessionMessageError> {
        let len = usize::try_from(self.u32()?).unwrap_or(usize::MAX);
        check_len(field, len, max)?;
        let data = self.take(len)?;
        Ok(self.message.slice_ref(data))
    }

    /// Fails if bytes are left after the last field.
    fn finish(self) -> Result<(), SessionMessageError> {
        match self.remaining() {
            0 => Ok(()),
            left => Err(invalid(format!(
                "{left} bytes after the message's last field"
            ))),
        }
    }
}

/// Fails if `field`'s `len` is over `max`.
fn check_len(field: &str, len: usize, max: usize) -> Result<(), SessionMessageError> {
    if len > max {
        return Err(invalid(format!(
            "{field} is {len} bytes, over the limit of {max}"
        )));
    }
    Ok(())
}

/// An [`SessionMessageError::Invalid`] saying `what`.
fn invalid(what: String) -> SessionMessageError {
    SessionMessageError::Invalid(what)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat_transfer::MAX_NAME_LEN;
    use proptest::prelude::*;

    fn report() -> StreamReport {
        StreamReport {
            sent: 1000,
            received: 990,
            lost: 10,
            duplicates: 3,
            reordered: 7,
            bytes: 1_013_760,
            jitter_us: 412,
        }
    }

    /// One message of every type.
    fn samples() -> Vec<SessionMessage> {
        vec![
            SessionMessage::Chat {
                text: "héllo, bob".into(),
            },
            SessionMessage::FileOffer {
                id: 7,
                name: "photo.jpg".into(),
                size: 5_000_000,
                sha256: [0xAB; 32],
            },
            SessionMessage::FileChunk {
                id: 7,
                offset: 65_536,
                data: Bytes::from_static(b"\x00\x01\x02chunk"),
            },
            SessionMessage::FileAbort {
                id: 7,
                reason: "disk full".into(),
            },
            SessionMessage::FileResult {
                id: 7,
                saved: true,
                detail: "photo.jpg".into(),
            },
            SessionMessage::StreamStart {
                id: 2,
                name: "clip.mp4".into(),
                rate: 250_000,
                chunk_size: 1_000,
            },
            SessionMessage::StreamEnd { id: 2, sent: 1000 },
            SessionMessage::StreamReport {
                id: 2,
                report: report(),
            },
        ]
    }

    fn decode(bytes: &[u8]) -> Result<SessionMessage, SessionMessageError> {
        SessionMessage::decode(Bytes::copy_from_slice(bytes))
    }

    fn assert_invalid(message: &SessionMessage, needle: &str) {
        match SessionMessage::decode(message.encode()) {
            Err(SessionMessageError::Invalid(text)) => {
                assert!(text.contains(needle), "{text:?} should name {needle:?}");
            }
            other => panic!("{} should be invalid, got {other:?}", message.kind()),
        }
    }

    #[test]
    fn every_variant_round_trips() {
        for message in samples() {
            let bytes = message.encode();
            assert_eq!(SessionMessage::decode(bytes), Ok(message.clone()));
        }
    }

    #[test]
    fn kinds_follow_the_type_bytes() {
        let samples = samples();
        assert_eq!(samples.len(), KINDS.len());
        for (index, message) in samples.iter().enumerate() {
            assert_eq!(message.kind(), KINDS[index]);
            assert_eq!(usize::from(message.encode()[0]), index + 1);
        }
    }

    #[test]
    fn layouts_are_as_documented() {
        let chat = SessionMessage::Chat { text: "hi".into() }.encode();
        assert_eq!(&chat[..], b"\x01\x00\x02hi");
        let offer = SessionMessage::FileOffer {
            id: 0x0102_0304,
            name: "a".into(),
            size: 0x10,
            sha256: [0xCC; 32],
        }
        .encode();
        let mut expected = vec![2, 1, 2, 3, 4, 0, 1, b'a', 0, 0, 0, 0, 0, 0, 0, 0x10];
        expected.extend_from_slice(&[0xCC; 32]);
        assert_eq!(&offer[..], &expected[..]);
        let chunk = SessionMessage::FileChunk {
            id: 1,
            offset: 2,
            data: Bytes::from_static(b"xy"),
        }
        .encode();
        assert_eq!(&chunk[..], b"\x03\0\0\0\x01\0\0\0\0\0\0\0\x02\0\0\0\x02xy");
        let result = SessionMessage::FileResult {
            id: 1,
            saved: false,
            detail: String::new(),
        }
        .encode();
        assert_eq!(&result[..], b"\x05\0\0\0\x01\0\0\0");
        let start = SessionMessage::StreamStart {
            id: 1,
            name: "m".into(),
            rate: 2,
            chunk_size: 3,
        }
        .encode();
        assert_eq!(&start[..], b"\x06\0\0\0\x01\0\x01m\0\0\0\x02\0\0\0\x03");
        let end = SessionMessage::StreamEnd { id: 1, sent: 9 }.encode();
        assert_eq!(&end[..], b"\x07\0\0\0\x01\0\0\0\x09");
        let report = SessionMessage::StreamReport {
            id: 1,
            report: report(),
        }
        .encode();
        let mut expected = vec![8, 0, 0, 0, 1];
        for field in [1000u32, 990, 10, 3, 7] {
            expected.extend_from_slice(&field.to_be_bytes());
        }
        expected.extend_from_slice(&1_013_760u64.to_be_bytes());
        expected.extend_from_slice(&412u32.to_be_bytes());
        assert_eq!(expected.len(), 37);
        assert_eq!(&report[..], &expected[..]);
    }

    #[test]
    fn file_chunk_data_is_a_slice_of_the_message() {
        let message = SessionMessage::FileChunk {
            id: 1,
            offset: 0,
            data: Bytes::from(vec![9; 1000]),
        }
        .encode();
        let range = message.as_ptr_range();
        let Ok(SessionMessage::FileChunk { data, .. }) = SessionMessage::decode(message.clone())
        else {
            panic!("a file chunk");
        };
        assert!(
            range.contains(&data.as_ptr()),
            "data points into the message"
        );
        assert_eq!(data.len(), 1000);
    }

    #[test]
    fn bounds_are_accepted_at_the_limit() {
        let at_limit = [
            SessionMessage::Chat {
                text: "x".repeat(MAX_TEXT_BYTES),
            },
            SessionMessage::FileChunk {
                id: 1,
                offset: 0,
                data: Bytes::from(vec![0; MAX_CHUNK_BYTES]),
            },
            SessionMessage::FileAbort {
                id: 1,
                reason: "r".repeat(MAX_REASON_BYTES),
            },
            SessionMessage::FileResult {
                id: 1,
                saved: false,
                detail: "d".repeat(MAX_REASON_BYTES),
            },
            SessionMessage::FileOffer {
                id: 1,
                name: "n".repeat(MAX_NAME_LEN),
                size: 0,
                sha256: [0; 32],
            },
        ];
        for message in at_limit {
            assert_eq!(
                SessionMessage::decode(message.encode()),
                Ok(message.clone())
            );
        }
    }

    #[test]
    fn each_bound_exceeded_is_invalid() {
        assert_invalid(
            &SessionMessage::Chat {
                text: "x".repeat(MAX_TEXT_BYTES + 1),
            },
            "text",
        );
        assert_invalid(
            &SessionMessage::Chat {
                text: "x".repeat(70_000),
            },
            "text",
        );
        assert_invalid(
            &SessionMessage::FileChunk {
                id: 1,
                offset: 0,
                data: Bytes::from(vec![0; MAX_CHUNK_BYTES + 1]),
            },
            "chunk data",
        );
        assert_invalid(
            &SessionMessage::FileAbort {
                id: 1,
                reason: "r".repeat(MAX_REASON_BYTES + 1),
            },
            "reason",
        );
        assert_invalid(
            &SessionMessage::FileResult {
                id: 1,
                saved: true,
                detail: "d".repeat(MAX_REASON_BYTES + 1),
            },
            "detail",
        );
        assert_invalid(
            &SessionMessage::StreamStart {
                id: 1,
                name: "n".repeat(MAX_NAME_LEN + 1),
                rate: 1,
                chunk_size: 1,
            },
            "file name",
        );
    }

    #[test]
    fn bad_file_names_are_invalid() {
        for name in ["../x", ".hidden", "a/b", "a\\b", "c:x", "", "tab\there"] {
            assert_invalid(
                &SessionMessage::FileOffer {
                    id: 1,
                    name: name.into(),
                    size: 1,
                    sha256: [0; 32],
                },
                "file name",
            );
            assert_invalid(
                &SessionMessage::StreamStart {
                    id: 1,
                    name: name.into(),
                    rate: 1,
                    chunk_size: 1,
                },
                "file name",
            );
        }
    }

    #[test]
    fn bad_utf8_and_bad_flag_are_invalid() {
        let mut chat = SessionMessage::Chat { text: "ab".into() }.encode().to_vec();
        chat[3] = 0xFF;
        assert!(
            matches!(decode(&chat), Err(SessionMessageError::Invalid(text)) if text.contains("UTF-8"))
        );
        let mut result = SessionMessage::FileResult {
            id: 1,
            saved: true,
            detail: String::new(),
        }
        .encode()
        .to_vec();
        result[5] = 2;
        assert!(
            matches!(decode(&result), Err(SessionMessageError::Invalid(text)) if text.contains("saved"))
        );
    }

    #[test]
    fn every_truncation_is_truncated() {
        for message in samples() {
            let bytes = message.encode();
            for len in 0..bytes.len() {
                assert_eq!(
                    decode(&bytes[..len]),
                    Err(SessionMessageError::Truncated),
                    "{} cut to {len} bytes",
                    message.kind()
                );
            }
        }
    }

    #[test]
    fn a_trailing_byte_is_invalid() {
        for message in samples() {
            let mut bytes = message.encode().to_vec();
            bytes.push(0);
            assert!(
                matches!(decode(&bytes), Err(SessionMessageError::Invalid(text)) if text.contains("after")),
                "{}",
                message.kind()
            );
        }
    }

    #[test]
    fn unknown_types_are_named() {
        for byte in [0, 9, 0x7F, 0xFF] {
            assert_eq!(
                decode(&[byte, 0, 0]),
                Err(SessionMessageError::UnknownType(byte))
            );
        }
        assert_eq!(
            SessionMessageError::UnknownType(9).to_string(),
            "unknown message type 9"
        );
    }

    fn text(max: usize) -> impl Strategy<Value = String> {
        proptest::collection::vec(any::<char>(), 0..64).prop_map(move |chars| {
            let mut text = String::new();
            for c in chars {
                if text.len() + c.len_utf8() > max {
                    break;
                }
                text.push(c);
            }
            text
        })
    }

    fn file_name() -> impl Strategy<Value = String> {
        "[A-Za-z0-9_][A-Za-z0-9_. -]{0,40}"
    }

    fn any_report() -> impl Strategy<Value = StreamReport> {
        (any::<[u32; 6]>(), any::<u64>()).prop_map(|(n, bytes)| StreamReport {
            sent: n[0],
            received: n[1],
            lost: n[2],
            duplicates: n[3],
            reordered: n[4],
            bytes,
            jitter_us: n[5],
        })
    }

    fn any_message() -> impl Strategy<Value = SessionMessage> {
        prop_oneof![
            text(MAX_TEXT_BYTES).prop_map(|text| SessionMessage::Chat { text }),
            (any::<u32>(), file_name(), any::<u64>(), any::<[u8; 32]>()).prop_map(
                |(id, name, size, sha256)| SessionMessage::FileOffer {
                    id,
                    name,
                    size,
                    sha256
                }
            ),
            (
                any::<u32>(),
                any::<u64>(),
                proptest::collection::vec(any::<u8>(), 0..300)
            )
                .prop_map(|(id, offset, data)| SessionMessage::FileChunk {
                    id,
                    offset,
                    data: data.into()
                }),
            (any::<u32>(), text(MAX_REASON_BYTES))
                .prop_map(|(id, reason)| SessionMessage::FileAbort { id, reason }),
            (any::<u32>(), any::<bool>(), text(MAX_REASON_BYTES))
                .prop_map(|(id, saved, detail)| SessionMessage::FileResult { id, saved, detail }),
            (any::<u32>(), file_name(), any::<u32>(), any::<u32>()).prop_map(
                |(id, name, rate, chunk_size)| SessionMessage::StreamStart {
                    id,
                    name,
                    rate,
                    chunk_size
                }
            ),
            (any::<u32>(), any::<u32>())
                .prop_map(|(id, sent)| SessionMessage::StreamEnd { id, sent }),
            (any::<u32>(), any_report())
                .prop_map(|(id, report)| SessionMessage::StreamReport { id, report }),
        ]
    }

    proptest! {
        #[test]
        fn any_message_round_trips(message in any_message()) {
            prop_assert_eq!(SessionMessage::decode(message.encode()), Ok(message));
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(message) = decode(&bytes) {
                prop_assert_eq!(&message.encode()[..], &bytes[..]);
            }
        }

        #[test]
        fn random_bytes_after_a_type_byte_never_panic(
            kind in 1u8..=8,
            rest in proptest::collection::vec(any::<u8>(), 0..100),
        ) {
            let mut bytes = vec![kind];
            bytes.extend_from_slice(&rest);
            if let Ok(message) = decode(&bytes) {
                prop_assert_eq!(&message.encode()[..], &bytes[..]);
            }
        }
    }
}
