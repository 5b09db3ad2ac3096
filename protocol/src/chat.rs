//! The chat room's framing (seed 003): a 10-byte ASCII length header, then the payload.
//!
//! # Wire format
//!
//! Every frame, in both directions, is:
//!
//! | bytes            | content                                                                 |
//! |------------------|-------------------------------------------------------------------------|
//! | `0..10`          | the payload length in decimal ASCII, left-justified, padded with spaces |
//! | `10..10 + len`   | the payload, `len` bytes (UTF-8 text in practice, not checked here)     |
//!
//! This is what the seed's Python client writes with `f"{len(msg):<10}"`, so the five-byte payload
//! `alice` travels as `b"5         alice"` and an empty payload as `b"0         "`. The length counts
//! bytes, not characters: `"né"` is 3 bytes and travels as `b"3         n\xc3\xa9"`.
//!
//! The seed's server parses a header with `int(header.decode('utf-8').strip())`. [`parse_header`]
//! accepts what that accepts from any real client: optional whitespace (the ASCII characters
//! Python's `str.strip()` removes: space, `\t`, `\n`, `\x0b`, `\x0c`, `\r`, `\x1c`..=`\x1f`), one
//! or more ASCII digits (leading zeros allowed), optional whitespace. It rejects what a real client
//! never sends even where Python would take it (a `+` sign, `_` digit separators, non-ASCII
//! digits), a negative length, an empty header, and any length over the receiver's limit.
//!
//! The room itself (seed 003): a client's first frame is its username; the server relays each
//! message to every other client as two frames, the sender's username then the message.
//!
//! [`ChatCodec`] is the `tokio_util` codec for this format: its decoder yields payloads and is
//! bounded by a maximum payload length ([`DEFAULT_MAX_PAYLOAD`] unless told otherwise).

use std::fmt;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// Length of the ASCII header in front of every frame, in bytes.
pub const HEADER_LEN: usize = 10;

/// The payload limit of [`ChatCodec::default`]: 64 KiB.
pub const DEFAULT_MAX_PAYLOAD: usize = 64 * 1024;

/// Why a received header is not a valid length (see [`ChatError::BadHeader`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderProblem {
    /// The header is all whitespace: it holds no length at all.
    Empty,
    /// The header holds a minus sign followed by digits.
    Negative,
    /// The header holds something other than whitespace around a run of ASCII digits.
    NotDecimal,
}

impl HeaderProblem {
    /// A short description, used in error messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Empty => "it is empty (all whitespace) instead of a decimal length",
            Self::Negative => "it holds a negative length",
            Self::NotDecimal => "it is not a decimal length (digits padded with spaces)",
        }
    }
}

impl fmt::Display for HeaderProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything that can go wrong framing chat messages.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// The peer sent a header that is not a length (`header` is the 10 bytes, escaped).
    #[error("bad chat frame header b\"{header}\" from the peer: {problem}")]
    BadHeader {
        /// The received header, escaped with `escape_ascii`.
        header: String,
        /// What is wrong with it.
        problem: HeaderProblem,
    },
    /// The peer announced a payload longer than this side accepts.
    #[error(
        "chat frame header b\"{header}\" from the peer announces a payload of {len} bytes, \
         over the limit of {max} bytes"
    )]
    LengthOverLimit {
        /// The received header, escaped with `escape_ascii`.
        header: String,
        /// The announced payload length.
        len: u64,
        /// The receiver's limit.
        max: usize,
    },
    /// The stream ended in the middle of a frame.
    #[error(
        "the peer closed the stream in the middle of a chat frame \
         ({buffered} bytes received of a frame of at least {needed} bytes)"
    )]
    Truncated {
        /// Bytes of the unfinished frame that did arrive.
        buffered: usize,
        /// Bytes the frame needs (the header alone if the header is incomplete).
        needed: usize,
    },
    /// Local misuse: a payload to send is longer than the codec's limit.
    #[error("chat payload to send is {len} bytes, over the limit of {max} bytes")]
    TooLong {
        /// The payload's length.
        len: usize,
        /// The codec's limit.
        max: usize,
    },
    /// Local misuse: a length whose decimal form does not fit in the 10-byte header.
    #[error("a payload length of {len} bytes has more than {HEADER_LEN} decimal digits")]
    LengthUnrepresentable {
        /// The length that was asked for.
        len: usize,
    },
    /// Reading or writing the underlying stream failed.
    #[error("chat stream I/O failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Encodes `len` as a header: decimal, left-justified, padded with spaces to [`HEADER_LEN`] bytes.
///
/// Fails with [`ChatError::LengthUnrepresentable`] if `len` has more than ten digits.
pub fn encode_header(len: usize) -> Result<[u8; HEADER_LEN], ChatError> {
    let digits = len.to_string();
    let mut header = [b' '; HEADER_LEN];
    header
        .get_mut(..digits.len())
        .ok_or(ChatError::LengthUnrepresentable { len })?
        .copy_from_slice(digits.as_bytes());
    Ok(header)
}

/// Parses a received header into a payload length no greater than `max_payload`.
///
/// Accepts whitespace around a run of ASCII digits (see the module docs for the exact set); every
/// error names the header and says what is wrong with it.
pub fn parse_header(header: &[u8; HEADER_LEN], max_payload: usize) -> Result<usize, ChatError> {
    let escaped = || header.escape_ascii().to_string();
    let len =
        digits_value(trim_python_whitespace(header)).map_err(|problem| ChatError::BadHeader {
            header: escaped(),
            problem,
        })?;
    match usize::try_from(len) {
        Ok(len) if len <= max_payload => Ok(len),
        _ => Err(ChatError::LengthOverLimit {
            header: escaped(),
            len,
            max: max_payload,
        }),
    }
}

/// Whether `byte` is one that Python's `str.strip()` removes (ASCII only).
fn is_python_whitespace(byte: u8) -> bool {
    matches!(
        byte,
        b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | 0x1c..=0x1f
    )
}

/// `bytes` without leading and trailing [`is_python_whitespace`] bytes.
fn trim_python_whitespace(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|&b| !is_python_whitespace(b))
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|&b| !is_python_whitespace(b))
        .map_or(start, |last| last + 1);
    bytes.get(start..end).unwrap_or_default()
}

/// The value of a trimmed header body, which must be one or more ASCII digits.
fn digits_value(body: &[u8]) -> Result<u64, HeaderProblem> {
    let all_digits = |s: &[u8]| !s.is_empty() && s.iter().all(u8::is_ascii_digit);
    match body {
        [] => Err(HeaderProblem::Empty),
        [b'-', rest @ ..] if all_digits(rest) => Err(HeaderProblem::Negative),
        _ if all_digits(body) => Ok(body.iter().fold(0u64, |n, &d| {
            n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
        })),
        _ => Err(HeaderProblem::NotDecimal),
    }
}

/// `tokio_util` codec for chat frames: decodes to payloads, encodes payloads with their header.
///
/// The decoder refuses any header announcing more than `max_payload` bytes, so a peer cannot make
/// it buffer more than `HEADER_LEN + max_payload` bytes; the encoder refuses to send such a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChatCodec {
    max_payload: usize,
}

impl ChatCodec {
    /// A codec that accepts and sends payloads of at most `max_payload` bytes.
    pub fn new(max_payload: usize) -> Self {
        Self { max_payload }
    }

    /// The largest payload this codec accepts or sends, in bytes.
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// Appends header and payload to `dst`, after checking the payload's length.
    fn encode_payload(&self, payload: &[u8], dst: &mut BytesMut) -> Result<(), ChatError> {
        if payload.len() > self.max_payload {
            return Err(ChatError::TooLong {
                len: payload.len(),
                max: self.max_payload,
            });
        }
        let header = encode_header(payload.len())?;
        dst.reserve(HEADER_LEN + payload.len());
        dst.put_slice(&header);
        dst.put_slice(payload);
        Ok(())
    }
}

impl Default for ChatCodec {
    /// A codec limited to [`DEFAULT_MAX_PAYLOAD`] bytes.
    fn default() -> Self {
        Self::new(DEFAULT_MAX_PAYLOAD)
    }
}

impl Decoder for ChatCodec {
    type Item = Bytes;
    type Error = ChatError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, ChatError> {
        let Some(frame_len) = complete_frame_len(src, self.max_payload)? else {
            return Ok(None);
        };
        src.advance(HEADER_LEN);
        Ok(Some(src.split_to(frame_len - HEADER_LEN).freeze()))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, ChatError> {
        match self.decode(src)? {
            Some(payload) => Ok(Some(payload)),
            None => end_of_stream(src, self.max_payload).map(|()| None),
        }
    }
}

/// The length of the frame at the start of `src`, header included, once all of it is there;
/// `None` (with room reserved for the rest) until then.
fn complete_frame_len(src: &mut BytesMut, max_payload: usize) -> Result<Option<usize>, ChatError> {
    let Some(header) = src.first_chunk::<HEADER_LEN>() else {
        src.reserve(HEADER_LEN - src.len());
        return Ok(None);
    };
    let frame_len = HEADER_LEN + parse_header(header, max_payload)?;
    if src.len() < frame_len {
        src.reserve(frame_len - src.len());
        return Ok(None);
    }
    Ok(Some(frame_len))
}

/// At the end of the stream, with no complete frame left in `src`: fine if nothing is left,
/// [`ChatError::Truncated`] if part of a frame is.
fn end_of_stream(src: &BytesMut, max_payload: usize) -> Result<(), ChatError> {
    if src.is_empty() {
        return Ok(());
    }
    let needed = match src.first_chunk::<HEADER_LEN>() {
        Some(header) => HEADER_LEN + parse_header(header, max_payload)?,
        None => HEADER_LEN,
    };
    Err(ChatError::Truncated {
        buffered: src.len(),
        needed,
    })
}

/// One frame exactly as it arrived, its header's bytes included: what the room relays, since the
/// seed's server passes on the sender's own headers rather than writing new ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatFrame(Bytes);

impl ChatFrame {
    /// The 10 header bytes as received.
    pub fn header(&self) -> &[u8] {
        &self.0[..HEADER_LEN]
    }

    /// The payload.
    pub fn payload(&self) -> &[u8] {
        &self.0[HEADER_LEN..]
    }

    /// Header and payload, as received.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// A frame with a canonical header (`f"{len:<10}"`) around `payload`.
    pub fn new(payload: &[u8]) -> Result<ChatFrame, ChatError> {
        let header = encode_header(payload.len())?;
        let mut bytes = BytesMut::with_capacity(HEADER_LEN + payload.len());
        bytes.put_slice(&header);
        bytes.put_slice(payload);
        Ok(ChatFrame(bytes.freeze()))
    }
}

/// The decoder of whole frames ([`ChatFrame`]), headers kept as received; bounded like
/// [`ChatCodec`], whose header rules it shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChatFrameCodec {
    max_payload: usize,
}

impl ChatFrameCodec {
    /// A decoder of frames with payloads of at most `max_payload` bytes.
    pub fn new(max_payload: usize) -> Self {
        Self { max_payload }
    }
}

impl Decoder for ChatFrameCodec {
    type Item = ChatFrame;
    type Error = ChatError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<ChatFrame>, ChatError> {
        let Some(frame_len) = complete_frame_len(src, self.max_payload)? else {
            return Ok(None);
        };
        Ok(Some(ChatFrame(src.split_to(frame_len).freeze())))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<ChatFrame>, ChatError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None => end_of_stream(src, self.max_payload).map(|()| None),
        }
    }
}

impl Encoder<&[u8]> for ChatCodec {
    type Error = ChatError;

    fn encode(&mut self, payload: &[u8], dst: &mut BytesMut) -> Result<(), ChatError> {
        self.encode_payload(payload, dst)
    }
}

impl Encoder<Bytes> for ChatCodec {
    type Error = ChatError;

    fn encode(&mut self, payload: Bytes, dst: &mut BytesMut) -> Result<(), ChatError> {
        self.encode_payload(&payload, dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;
    use proptest::prelude::*;

    /// Encodes each payload with a default codec into one buffer.
    fn encode_all(payloads: &[&[u8]]) -> BytesMut {
        let mut codec = ChatCodec::default();
        let mut wire = BytesMut::new();
        for payload in payloads {
            codec
                .encode(*payload, &mut wire)
                .expect("payload within limit");
        }
        wire
    }

    fn decode_chunked(wire: &[u8], chunk_sizes: &[usize]) -> Result<Vec<Bytes>, ChatError> {
        testing::decode_chunked(ChatCodec::default(), wire, chunk_sizes)
    }

    fn header(bytes: &[u8; HEADER_LEN]) -> Result<usize, ChatError> {
        parse_header(bytes, DEFAULT_MAX_PAYLOAD)
    }

    #[test]
    fn encodes_the_seed_example_byte_for_byte() {
        assert_eq!(&encode_all(&[b"alice"])[..], b"5         alice");
    }

    #[test]
    fn header_counts_utf8_bytes_not_chars() {
        let text = "né ☃"; // 4 chars, 7 bytes
        assert_eq!(
            &encode_all(&[text.as_bytes()])[..],
            b"7         n\xc3\xa9 \xe2\x98\x83"
        );
    }

    #[test]
    fn empty_payload_is_a_valid_frame() {
        assert_eq!(&encode_all(&[b""])[..], b"0         ");
        let mut buf = BytesMut::from(&b"0         "[..]);
        let frame = ChatCodec::default().decode(&mut buf).expect("valid frame");
        assert_eq!(frame.as_deref(), Some(&b""[..]));
        assert!(buf.is_empty());
    }

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn encode_header_pads_and_refuses_eleven_digits() {
        assert_eq!(&encode_header(0).expect("fits"), b"0         ");
        assert_eq!(&encode_header(9_999_999_999).expect("fits"), b"9999999999");
        let err = encode_header(10_000_000_000).expect_err("11 digits");
        assert!(matches!(
            err,
            ChatError::LengthUnrepresentable {
                len: 10_000_000_000
            }
        ));
        assert!(err.to_string().contains("10000000000"), "{err}");
    }

    #[test]
    fn parse_header_accepts_what_python_strip_int_accepts() {
        assert_eq!(header(b"5         ").ok(), Some(5));
        assert_eq!(header(b"     42   ").ok(), Some(42));
        assert_eq!(header(b"0000000012").ok(), Some(12));
        assert_eq!(header(b"\t7\r\n      ").ok(), Some(7));
        assert_eq!(header(b"\x0b\x0c\x1c3\x1f     ").ok(), Some(3));
    }

    #[test]
    fn round_trips_several_frames() {
        let payloads: [&[u8]; 4] = [b"alice", b"", "héllo wörld".as_bytes(), &[0, 255, 10]];
        let wire = encode_all(&payloads);
        let frames = decode_chunked(&wire, &[wire.len()]).expect("valid stream");
        assert_eq!(frames, payloads.map(Bytes::copy_from_slice));
    }

    #[test]
    fn encoder_accepts_bytes_too() {
        let mut wire = BytesMut::new();
        ChatCodec::default()
            .encode(Bytes::from_static(b"hi"), &mut wire)
            .expect("small payload");
        assert_eq!(&wire[..], b"2         hi");
    }

    #[test]
    fn decodes_a_stream_split_at_every_byte_boundary() {
        let payloads: [&[u8]; 4] = [b"alice", b"", "ünïcode ☃".as_bytes(), b"bye"];
        let wire = encode_all(&payloads);
        let expected = payloads.map(Bytes::copy_from_slice);
        testing::assert_decodes_at_every_split(ChatCodec::default, &wire, &expected);
    }

    #[test]
    fn waits_for_the_rest_and_reserves_room_for_it() {
        let mut codec = ChatCodec::default();
        let mut buf = BytesMut::from(&b"5    "[..]);
        assert!(codec.decode(&mut buf).expect("partial header").is_none());
        buf.extend_from_slice(b"     al");
        assert!(codec.decode(&mut buf).expect("partial payload").is_none());
        assert!(buf.capacity() >= HEADER_LEN + 5);
        buf.extend_from_slice(b"ice");
        let frame = codec.decode(&mut buf).expect("whole frame");
        assert_eq!(frame.as_deref(), Some(&b"alice"[..]));
    }

    #[test]
    fn eof_inside_a_frame_is_reported() {
        let err = decode_chunked(b"5         ali", &[3]).expect_err("truncated");
        assert!(
            matches!(
                err,
                ChatError::Truncated {
                    buffered: 13,
                    needed: 15
                }
            ),
            "{err}"
        );
        let err = decode_chunked(b"5    ", &[3]).expect_err("truncated header");
        assert!(
            matches!(
                err,
                ChatError::Truncated {
                    buffered: 5,
                    needed: 10
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn oversize_is_refused_with_both_numbers() {
        let mut codec = ChatCodec::new(4);
        let err = codec
            .encode(&b"alice"[..], &mut BytesMut::new())
            .expect_err("5 > 4");
        assert!(matches!(err, ChatError::TooLong { len: 5, max: 4 }));
        assert!(err.to_string().contains("5 bytes") && err.to_string().contains("4 bytes"));

        let mut buf = BytesMut::from(&b"5         alice"[..]);
        let err = codec.decode(&mut buf).expect_err("5 > 4");
        assert!(matches!(
            err,
            ChatError::LengthOverLimit { len: 5, max: 4, .. }
        ));
        let msg = err.to_string();
        assert!(
            msg.contains("b\"5         \"") && msg.contains("5 bytes") && msg.contains("4 bytes")
        );

        let err = header(b"9999999999").expect_err("huge");
        assert!(err.to_string().contains("9999999999 bytes"), "{err}");
        assert!(
            err.to_string().contains(&DEFAULT_MAX_PAYLOAD.to_string()),
            "{err}"
        );
    }

    #[test]
    fn garbage_headers_are_refused_naming_the_header() {
        let cases: [(&[u8; HEADER_LEN], HeaderProblem, &str); 7] = [
            (b"abc       ", HeaderProblem::NotDecimal, r#"b"abc       ""#),
            (b"-5        ", HeaderProblem::Negative, r#"b"-5        ""#),
            (b"          ", HeaderProblem::Empty, r#"b"          ""#),
            (b"5 5       ", HeaderProblem::NotDecimal, r#"b"5 5       ""#),
            (b"+5        ", HeaderProblem::NotDecimal, r#"b"+5        ""#),
            (b"-         ", HeaderProblem::NotDecimal, r#"b"-         ""#),
            (
                b"\xc3\xa95       ",
                HeaderProblem::NotDecimal,
                r#"b"\xc3\xa95       ""#,
            ),
        ];
        for (bytes, problem, shown) in cases {
            let err = header(bytes).expect_err("garbage header");
            assert!(
                matches!(&err, ChatError::BadHeader { problem: p, .. } if *p == problem),
                "{err}"
            );
            let msg = err.to_string();
            assert!(msg.contains(shown), "{msg} should name {shown}");
            assert!(msg.contains(problem.as_str()), "{msg}");
        }
    }

    #[test]
    fn garbage_header_fails_the_decoder() {
        let mut buf = BytesMut::from(&b"abc       hello"[..]);
        let err = ChatCodec::default().decode(&mut buf).expect_err("garbage");
        assert!(matches!(err, ChatError::BadHeader { .. }), "{err}");
    }

    proptest! {
        #[test]
        fn any_payloads_round_trip_through_any_chunking(
            payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..8),
            chunk_sizes in prop::collection::vec(1usize..64, 1..16),
        ) {
            let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
            let wire = encode_all(&refs);
            let frames = decode_chunked(&wire, &chunk_sizes).expect("valid stream");
            let expected: Vec<Bytes> = payloads.into_iter().map(Bytes::from).collect();
            prop_assert_eq!(frames, expected);
        }

        #[test]
        fn parse_header_never_panics(bytes in any::<[u8; HEADER_LEN]>(), max in any::<usize>()) {
            if let Ok(len) = parse_header(&bytes, max) {
                prop_assert!(len <= max);
            }
        }

        #[test]
        fn decoder_never_panics(
            bytes in prop::collection::vec(any::<u8>(), 0..256),
            chunk_sizes in prop::collection::vec(1usize..32, 1..8),
        ) {
            let _ = decode_chunked(&bytes, &chunk_sizes);
        }

        #[test]
        fn encoded_headers_parse_back(len in 0u64..=9_999_999_999) {
            let Ok(len) = usize::try_from(len) else { return Ok(()) };
            let header = encode_header(len).expect("at most 10 digits");
            prop_assert_eq!(parse_header(&header, usize::MAX).ok(), Some(len));
        }
    }

    #[test]
    fn frames_keep_the_senders_header_bytes() {
        // A header the seed's server accepts but would not write: relayed as it came.
        let wire = b"  5       alice0         3         n\xc3\xa9";
        let frames = decode_frames(wire);
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[0].header(), b"  5       ");
        assert_eq!(frames[0].payload(), b"alice");
        assert_eq!(frames[1].payload(), b"");
        assert_eq!(frames[2].as_bytes().as_ref(), b"3         n\xc3\xa9");
        assert_eq!(
            ChatFrame::new(b"alice").unwrap().as_bytes().as_ref(),
            b"5         alice"
        );
    }

    #[test]
    fn frames_decode_at_every_split_and_are_bounded() {
        let wire = b"5         alice11        hello there";
        let expected = decode_frames(wire);
        testing::assert_decodes_at_every_split(|| ChatFrameCodec::new(64), wire, &expected);
        let mut codec = ChatFrameCodec::new(4);
        let mut over = BytesMut::from(&b"5         alice"[..]);
        assert!(matches!(
            codec.decode(&mut over),
            Err(ChatError::LengthOverLimit { len: 5, max: 4, .. })
        ));
        let mut garbage = BytesMut::from(&b"hello worl"[..]);
        assert!(matches!(
            ChatFrameCodec::new(64).decode(&mut garbage),
            Err(ChatError::BadHeader { .. })
        ));
        let mut cut = BytesMut::from(&b"5         ali"[..]);
        assert!(matches!(
            ChatFrameCodec::new(64).decode_eof(&mut cut),
            Err(ChatError::Truncated {
                buffered: 13,
                needed: 15
            })
        ));
    }

    fn decode_frames(wire: &[u8]) -> Vec<ChatFrame> {
        testing::decode_chunked(ChatFrameCodec::new(64), wire, &[wire.len()]).unwrap()
    }
}
