//! The forum's message envelope (seed 001) and its length-prefixed TCP codec.
//!
//! The seed pickled `{ username, cmd, args }` objects in both directions; we carry the same three
//! fields as an [`Envelope`] encoded with bincode 2 (serde, standard configuration). [`Cmd`] names
//! the vocabulary that travels in `cmd`, but the envelope keeps `cmd` as a plain string so that an
//! unknown command still decodes and can be refused politely ([`Envelope::command`]).
//!
//! # Envelope bytes ([`Envelope::to_bytes`], [`Envelope::from_bytes`])
//!
//! Bincode's standard configuration: fields in declaration order, lengths as varints.
//!
//! | bytes      | content                                                      |
//! |------------|--------------------------------------------------------------|
//! | varint `n` | byte length of `username`, then its `n` UTF-8 bytes          |
//! | varint `n` | byte length of `cmd`, then its `n` UTF-8 bytes               |
//! | varint `k` | number of `args`; then each arg as varint length + UTF-8     |
//!
//! A varint is one byte for values 0..=250; otherwise a marker byte (`251` = u16, `252` = u32,
//! `253` = u64) followed by the value little-endian. So `Envelope { username: "Yoda", cmd: "CRT",
//! args: ["3331"] }` is the 15 bytes `04 'Yoda' 03 'CRT' 01 04 '3331'`.
//!
//! An encoded envelope is at most [`MAX_ENVELOPE_BYTES`]; decoding refuses anything longer, any
//! malformed or non-UTF-8 content, and any bytes left over after the envelope. These bytes are what
//! a UDP datagram (through the reliable-datagram layer) carries.
//!
//! # TCP frames ([`EnvelopeCodec`])
//!
//! | bytes         | content                                                   |
//! |---------------|-----------------------------------------------------------|
//! | `0..4`        | `len`, the envelope's byte length, u32 big-endian         |
//! | `4..4 + len`  | the envelope bytes as above                               |
//!
//! So the example above travels over TCP as `00 00 00 0f` followed by its 15 bytes.

use std::fmt;
use std::str::FromStr;

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};

/// The largest encoded envelope, in bytes, that is sent or accepted: 64 KiB.
pub const MAX_ENVELOPE_BYTES: usize = 64 * 1024;

/// Length of the TCP frame's length prefix, in bytes.
const PREFIX_LEN: usize = 4;

/// Everything that can go wrong encoding, decoding or framing forum envelopes.
#[derive(Debug, thiserror::Error)]
pub enum ForumError {
    /// Local misuse: the envelope to send encodes to more than the limit.
    #[error("forum envelope to send encodes to {len} bytes, over the limit of {max} bytes")]
    TooLargeToSend {
        /// The encoded length.
        len: usize,
        /// The limit ([`MAX_ENVELOPE_BYTES`]).
        max: usize,
    },
    /// The peer sent (or announced, in a TCP length prefix) an envelope over the limit.
    #[error("the peer sent a forum envelope of {len} bytes, over the limit of {max} bytes")]
    TooLargeReceived {
        /// The received or announced length.
        len: u64,
        /// The limit ([`MAX_ENVELOPE_BYTES`]).
        max: usize,
    },
    /// The peer sent bytes that are not a bincode envelope.
    #[error("the peer sent a malformed forum envelope: {0}")]
    Malformed(bincode::error::DecodeError),
    /// The peer sent a valid envelope followed by extra bytes.
    #[error(
        "the peer sent a forum envelope with {} trailing bytes after it ({used} of {total} bytes used)",
        total - used
    )]
    TrailingBytes {
        /// Bytes the envelope took.
        used: usize,
        /// Bytes received.
        total: usize,
    },
    /// The stream ended in the middle of a TCP frame.
    #[error(
        "the peer closed the stream in the middle of a forum frame \
         ({buffered} bytes received of a frame of at least {needed} bytes)"
    )]
    Truncated {
        /// Bytes of the unfinished frame that did arrive.
        buffered: usize,
        /// Bytes the frame needs (the prefix alone if the prefix is incomplete).
        needed: usize,
    },
    /// A `cmd` string that is not in the forum's vocabulary.
    #[error("unknown forum command {cmd:?}")]
    UnknownCommand {
        /// The string received.
        cmd: String,
    },
    /// Bincode could not encode the envelope (not expected for strings).
    #[error("could not encode a forum envelope: {0}")]
    Encode(bincode::error::EncodeError),
    /// Reading or writing the underlying stream failed.
    #[error("forum stream I/O failed: {0}")]
    Io(#[from] std::io::Error),
}

/// The seed's `{ username, cmd, args }` message, in both directions.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Envelope {
    /// The client's username (or the seed's `init`/`auth` placeholders before login).
    pub username: String,
    /// The command or status, normally one of [`Cmd`]'s wire strings.
    pub cmd: String,
    /// The command's arguments or the status's details.
    pub args: Vec<String>,
}

/// Bincode's decode limit, which bounds what decoding may allocate (not the input's length).
///
/// Bincode counts 8 bytes for every length it reads (each a varint of at least 1 byte on the
/// wire) plus the bytes of every string, so a valid envelope of `n` bytes claims at most `8 * n`.
/// With this limit every envelope within [`MAX_ENVELOPE_BYTES`] decodes, while a forged length
/// cannot make the decoder allocate more than this before it finds the input too short.
const DECODE_CLAIM_LIMIT: usize = 8 * MAX_ENVELOPE_BYTES;

/// The bincode configuration of envelopes: standard (varint lengths), with the decode limit.
fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<DECODE_CLAIM_LIMIT>()
}

impl Envelope {
    /// An envelope from its three parts; `cmd` may be a [`Cmd`] or a string.
    pub fn new(
        username: impl Into<String>,
        cmd: impl Into<String>,
        args: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self {
            username: username.into(),
            cmd: cmd.into(),
            args: args.into_iter().map(Into::into).collect(),
        }
    }

    /// The command, if `cmd` is in the vocabulary; otherwise [`ForumError::UnknownCommand`].
    pub fn command(&self) -> Result<Cmd, ForumError> {
        self.cmd.parse()
    }

    /// Encodes the envelope, refusing an encoding over [`MAX_ENVELOPE_BYTES`].
    pub fn to_bytes(&self) -> Result<Vec<u8>, ForumError> {
        let bytes =
            bincode::serde::encode_to_vec(self, bincode_config()).map_err(ForumError::Encode)?;
        if bytes.len() > MAX_ENVELOPE_BYTES {
            return Err(ForumError::TooLargeToSend {
                len: bytes.len(),
                max: MAX_ENVELOPE_BYTES,
            });
        }
        Ok(bytes)
    }

    /// Decodes exactly one envelope from `bytes`: oversize, malformed or trailing bytes are errors.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ForumError> {
        if bytes.len() > MAX_ENVELOPE_BYTES {
            return Err(ForumError::TooLargeReceived {
                len: bytes.len() as u64,
                max: MAX_ENVELOPE_BYTES,
            });
        }
        let (envelope, used) = bincode::serde::decode_from_slice(bytes, bincode_config())
            .map_err(ForumError::Malformed)?;
        if used != bytes.len() {
            return Err(ForumError::TrailingBytes {
                used,
                total: bytes.len(),
            });
        }
        Ok(envelope)
    }
}

/// The forum's vocabulary: auth steps, client commands and server statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cmd {
    /// `user`: send or receive the username (auth step).
    User,
    /// `pw`: send or receive the password of an existing user (auth step).
    Pw,
    /// `newPw`: send or receive the password of a new user (auth step).
    NewPw,
    /// `CRT`: create a thread.
    Crt,
    /// `MSG`: post a message to a thread.
    Msg,
    /// `DLT`: delete one of your messages.
    Dlt,
    /// `EDT`: edit one of your messages.
    Edt,
    /// `LST`: list the threads.
    Lst,
    /// `RDT`: read a thread.
    Rdt,
    /// `RMV`: remove a thread you created.
    Rmv,
    /// `XIT`: log out.
    Xit,
    /// `UPD`: upload a file to a thread.
    Upd,
    /// `DWN`: download a file from a thread.
    Dwn,
    /// `SHT`: shut the server down (admin).
    Sht,
    /// `done`: the command succeeded.
    Done,
    /// `no-thread`: the thread does not exist.
    NoThread,
    /// `no-msg`: the message number is invalid.
    NoMsg,
    /// `file-error`: the upload already exists or the download does not.
    FileError,
    /// `TCP-open`: the server opened the TCP socket for a file body.
    TcpOpen,
    /// `error`: the request was refused; the args say why.
    Error,
}

impl Cmd {
    /// Every command, in declaration order.
    pub const ALL: [Cmd; 20] = [
        Cmd::User,
        Cmd::Pw,
        Cmd::NewPw,
        Cmd::Crt,
        Cmd::Msg,
        Cmd::Dlt,
        Cmd::Edt,
        Cmd::Lst,
        Cmd::Rdt,
        Cmd::Rmv,
        Cmd::Xit,
        Cmd::Upd,
        Cmd::Dwn,
        Cmd::Sht,
        Cmd::Done,
        Cmd::NoThread,
        Cmd::NoMsg,
        Cmd::FileError,
        Cmd::TcpOpen,
        Cmd::Error,
    ];

    /// The exact string that travels in [`Envelope::cmd`].
    pub fn as_str(self) -> &'static str {
        match self {
            Cmd::User => "user",
            Cmd::Pw => "pw",
            Cmd::NewPw => "newPw",
            Cmd::Crt => "CRT",
            Cmd::Msg => "MSG",
            Cmd::Dlt => "DLT",
            Cmd::Edt => "EDT",
            Cmd::Lst => "LST",
            Cmd::Rdt => "RDT",
            Cmd::Rmv => "RMV",
            Cmd::Xit => "XIT",
            Cmd::Upd => "UPD",
            Cmd::Dwn => "DWN",
            Cmd::Sht => "SHT",
            Cmd::Done => "done",
            Cmd::NoThread => "no-thread",
            Cmd::NoMsg => "no-msg",
            Cmd::FileError => "file-error",
            Cmd::TcpOpen => "TCP-open",
            Cmd::Error => "error",
        }
    }
}

impl FromStr for Cmd {
    type Err = ForumError;

    /// Parses an exact (case-sensitive) wire string.
    fn from_str(s: &str) -> Result<Self, ForumError> {
        Cmd::ALL
            .into_iter()
            .find(|cmd| cmd.as_str() == s)
            .ok_or_else(|| ForumError::UnknownCommand { cmd: s.to_owned() })
    }
}

impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<Cmd> for String {
    fn from(cmd: Cmd) -> String {
        cmd.as_str().to_owned()
    }
}

/// `tokio_util` codec for envelopes over TCP: a u32 big-endian length prefix, then the envelope.
///
/// Wraps a [`LengthDelimitedCodec`] limited to [`MAX_ENVELOPE_BYTES`]. The decoder first peeks at
/// the prefix itself, so that an oversize frame is refused with its length and the inner codec is
/// only handed whole frames (it never holds a half-read frame between calls).
#[derive(Debug)]
pub struct EnvelopeCodec {
    inner: LengthDelimitedCodec,
}

impl Default for EnvelopeCodec {
    fn default() -> Self {
        let inner = LengthDelimitedCodec::builder()
            .length_field_length(PREFIX_LEN)
            .big_endian()
            .max_frame_length(MAX_ENVELOPE_BYTES)
            .new_codec();
        Self { inner }
    }
}

impl EnvelopeCodec {
    /// A codec limited to [`MAX_ENVELOPE_BYTES`] per envelope.
    pub fn new() -> Self {
        Self::default()
    }

    /// The total length of the frame at the front of `src`, once its prefix is buffered.
    fn frame_len(src: &BytesMut) -> Result<Option<usize>, ForumError> {
        let Some(prefix) = src.first_chunk::<PREFIX_LEN>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(*prefix);
        match usize::try_from(len) {
            Ok(len) if len <= MAX_ENVELOPE_BYTES => Ok(Some(PREFIX_LEN + len)),
            _ => Err(ForumError::TooLargeReceived {
                len: u64::from(len),
                max: MAX_ENVELOPE_BYTES,
            }),
        }
    }

    /// Frames already-encoded envelope bytes.
    fn encode_bytes(&mut self, bytes: Vec<u8>, dst: &mut BytesMut) -> Result<(), ForumError> {
        self.inner.encode(Bytes::from(bytes), dst)?;
        Ok(())
    }
}

impl Decoder for EnvelopeCodec {
    type Item = Envelope;
    type Error = ForumError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Envelope>, ForumError> {
        let needed = Self::frame_len(src)?.unwrap_or(PREFIX_LEN);
        if src.len() < needed {
            src.reserve(needed - src.len());
            return Ok(None);
        }
        match self.inner.decode(src)? {
            Some(frame) => Envelope::from_bytes(&frame).map(Some),
            None => Ok(None),
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Envelope>, ForumError> {
        if let Some(envelope) = self.decode(src)? {
            return Ok(Some(envelope));
        }
        if src.is_empty() {
            return Ok(None);
        }
        Err(ForumError::Truncated {
            buffered: src.len(),
            needed: Self::frame_len(src)?.unwrap_or(PREFIX_LEN),
        })
    }
}

impl Encoder<&Envelope> for EnvelopeCodec {
    type Error = ForumError;

    fn encode(&mut self, envelope: &Envelope, dst: &mut BytesMut) -> Result<(), ForumError> {
        let bytes = envelope.to_bytes()?;
        self.encode_bytes(bytes, dst)
    }
}

impl Encoder<Envelope> for EnvelopeCodec {
    type Error = ForumError;

    fn encode(&mut self, envelope: Envelope, dst: &mut BytesMut) -> Result<(), ForumError> {
        self.encode(&envelope, dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;
    use proptest::prelude::*;

    fn yoda() -> Envelope {
        Envelope::new("Yoda", Cmd::Crt, ["3331"])
    }

    /// Bincode standard config: each string is a varint byte length (one byte below 251) then
    /// its UTF-8 bytes; `args` is a varint element count then each string the same way.
    const YODA_BYTES: [u8; 15] = [
        4, b'Y', b'o', b'd', b'a', // username: len 4, "Yoda"
        3, b'C', b'R', b'T', // cmd: len 3, "CRT"
        1,    // args: 1 element
        4, b'3', b'3', b'3', b'1', // args[0]: len 4, "3331"
    ];

    /// Frames each envelope with a fresh codec into one buffer.
    fn encode_all(envelopes: &[Envelope]) -> BytesMut {
        let mut codec = EnvelopeCodec::default();
        let mut wire = BytesMut::new();
        for envelope in envelopes {
            codec
                .encode(envelope, &mut wire)
                .expect("envelope within limit");
        }
        wire
    }

    fn decode_chunked(wire: &[u8], chunk_sizes: &[usize]) -> Result<Vec<Envelope>, ForumError> {
        testing::decode_chunked(EnvelopeCodec::default(), wire, chunk_sizes)
    }

    fn sample_envelopes() -> Vec<Envelope> {
        vec![
            Envelope::new("init", Cmd::User, ["Yoda"]),
            yoda(),
            Envelope::new("Yoda", Cmd::Lst, Vec::<String>::new()),
            Envelope::new("Yoda", Cmd::Msg, ["3331", "héllo ☃ wörld"]),
            Envelope::new("", "", [""]),
        ]
    }

    #[test]
    fn encodes_the_yoda_example_byte_for_byte() {
        assert_eq!(yoda().to_bytes().expect("small"), YODA_BYTES);
        assert_eq!(Envelope::from_bytes(&YODA_BYTES).expect("valid"), yoda());
    }

    #[test]
    fn frames_the_yoda_example_byte_for_byte() {
        let wire = encode_all(&[yoda()]);
        assert_eq!(&wire[..PREFIX_LEN], [0, 0, 0, 15]);
        assert_eq!(&wire[PREFIX_LEN..], YODA_BYTES);
    }

    #[test]
    fn round_trips_envelopes() {
        for envelope in sample_envelopes() {
            let bytes = envelope.to_bytes().expect("small");
            assert_eq!(Envelope::from_bytes(&bytes).expect("valid"), envelope);
        }
    }

    #[test]
    fn decodes_a_stream_split_at_every_byte_boundary() {
        let envelopes = sample_envelopes();
        let wire = encode_all(&envelopes);
        testing::assert_decodes_at_every_split(EnvelopeCodec::default, &wire, &envelopes);
    }

    #[test]
    fn accepts_the_limit_and_refuses_one_byte_more_on_encode() {
        // A 65531-byte username takes a 3-byte varint (251 + u16), plus 1 byte for the empty
        // cmd and 1 for the empty args: 65536 bytes in all.
        let at_limit = Envelope::new("x".repeat(65_531), "", Vec::<String>::new());
        let bytes = at_limit.to_bytes().expect("exactly at the limit");
        assert_eq!(bytes.len(), MAX_ENVELOPE_BYTES);
        assert_eq!(
            decode_chunked(&encode_all(std::slice::from_ref(&at_limit)), &[999]).expect("ok"),
            [at_limit]
        );

        let over = Envelope::new("x".repeat(65_532), "", Vec::<String>::new());
        let err = over.to_bytes().expect_err("one byte over");
        assert!(
            matches!(
                err,
                ForumError::TooLargeToSend {
                    len: 65_537,
                    max: 65_536
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("65537") && err.to_string().contains("65536"));
        let err = EnvelopeCodec::new()
            .encode(&over, &mut BytesMut::new())
            .expect_err("codec refuses too");
        assert!(matches!(err, ForumError::TooLargeToSend { .. }), "{err}");
    }

    #[test]
    fn decodes_many_empty_args_up_to_the_limit() {
        // 65531 empty args: 1 + 1 (empty username, cmd) + 3 (varint 251, u16 65531) + 65531 =
        // 65536 bytes, each arg a 1-byte length that bincode counts as 8 against its decode limit.
        let envelope = Envelope::new("", "", vec![String::new(); 65_531]);
        let bytes = envelope.to_bytes().expect("exactly at the limit");
        assert_eq!(bytes.len(), MAX_ENVELOPE_BYTES);
        assert_eq!(
            Envelope::from_bytes(&bytes).expect("within the limit"),
            envelope
        );
    }

    #[test]
    fn refuses_an_oversize_length_prefix() {
        let mut buf = BytesMut::from(&[0, 1, 0, 1, b'x'][..]);
        let err = EnvelopeCodec::new()
            .decode(&mut buf)
            .expect_err("65537 > 65536");
        assert!(
            matches!(
                err,
                ForumError::TooLargeReceived {
                    len: 65_537,
                    max: 65_536
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("65537") && err.to_string().contains("65536"));

        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff][..]);
        let err = EnvelopeCodec::new().decode(&mut buf).expect_err("4 GiB");
        assert!(
            matches!(
                err,
                ForumError::TooLargeReceived {
                    len: 4_294_967_295,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn refuses_an_oversize_slice() {
        let err = Envelope::from_bytes(&vec![0; MAX_ENVELOPE_BYTES + 1]).expect_err("too big");
        assert!(
            matches!(err, ForumError::TooLargeReceived { len: 65_537, .. }),
            "{err}"
        );
    }

    #[test]
    fn refuses_garbage_and_truncated_bytes() {
        let cases: [&[u8]; 6] = [
            &[],
            &YODA_BYTES[..YODA_BYTES.len() - 1],
            &[0xff],
            &[1, 0xff, 0, 0],                   // username not UTF-8
            &[0xfc, 0xff, 0xff, 0xff, 0x7f, 0], // username claims ~2 GiB
            &[0, 0, 0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], // 2^64-1 args
        ];
        for bytes in cases {
            let err = Envelope::from_bytes(bytes).expect_err("garbage");
            assert!(matches!(err, ForumError::Malformed(_)), "{bytes:?}: {err}");
            assert!(err.to_string().contains("malformed"), "{err}");
        }
    }

    #[test]
    fn refuses_trailing_bytes() {
        let mut bytes = YODA_BYTES.to_vec();
        bytes.extend_from_slice(b"!!");
        let err = Envelope::from_bytes(&bytes).expect_err("trailing");
        assert!(
            matches!(
                err,
                ForumError::TrailingBytes {
                    used: 15,
                    total: 17
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("2 trailing bytes"), "{err}");
    }

    #[test]
    fn codec_refuses_a_frame_with_trailing_bytes_inside() {
        let mut wire = BytesMut::from(&[0, 0, 0, 16][..]);
        wire.extend_from_slice(&YODA_BYTES);
        wire.extend_from_slice(b"!");
        let err = EnvelopeCodec::new()
            .decode(&mut wire)
            .expect_err("trailing");
        assert!(
            matches!(
                err,
                ForumError::TrailingBytes {
                    used: 15,
                    total: 16
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn eof_inside_a_frame_is_reported() {
        let wire = encode_all(&[yoda()]);
        let err = decode_chunked(&wire[..10], &[3]).expect_err("truncated");
        assert!(
            matches!(
                err,
                ForumError::Truncated {
                    buffered: 10,
                    needed: 19
                }
            ),
            "{err}"
        );
        let err = decode_chunked(&wire[..2], &[3]).expect_err("truncated prefix");
        assert!(
            matches!(
                err,
                ForumError::Truncated {
                    buffered: 2,
                    needed: 4
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn unknown_command_decodes_and_is_refused_by_name() {
        let envelope = Envelope::new("Yoda", "FLY", ["away"]);
        let decoded = Envelope::from_bytes(&envelope.to_bytes().expect("small")).expect("valid");
        let err = decoded.command().expect_err("not a forum command");
        assert!(matches!(&err, ForumError::UnknownCommand { cmd } if cmd == "FLY"));
        assert_eq!(err.to_string(), "unknown forum command \"FLY\"");
        assert_eq!(yoda().command().expect("known"), Cmd::Crt);
    }

    #[test]
    fn every_cmd_round_trips_through_its_wire_string() {
        for cmd in Cmd::ALL {
            assert_eq!(cmd.as_str().parse::<Cmd>().expect("known"), cmd);
            assert_eq!(cmd.to_string(), cmd.as_str());
            assert_eq!(String::from(cmd), cmd.as_str());
        }
        let strings: std::collections::HashSet<_> = Cmd::ALL.map(Cmd::as_str).into();
        assert_eq!(strings.len(), Cmd::ALL.len(), "wire strings are distinct");
        assert!("crt".parse::<Cmd>().is_err(), "case-sensitive");
    }

    #[test]
    fn wire_strings_match_the_seed() {
        let seed = [
            "user",
            "pw",
            "newPw",
            "CRT",
            "MSG",
            "DLT",
            "EDT",
            "LST",
            "RDT",
            "RMV",
            "XIT",
            "UPD",
            "DWN",
            "SHT",
            "done",
            "no-thread",
            "no-msg",
            "file-error",
            "TCP-open",
            "error",
        ];
        assert_eq!(Cmd::ALL.map(Cmd::as_str), seed);
    }

    fn any_envelope() -> impl Strategy<Value = Envelope> {
        (
            any::<String>(),
            any::<String>(),
            prop::collection::vec(any::<String>(), 0..6),
        )
            .prop_map(|(username, cmd, args)| Envelope {
                username,
                cmd,
                args,
            })
    }

    proptest! {
        #[test]
        fn any_envelope_round_trips_through_bytes(envelope in any_envelope()) {
            let bytes = envelope.to_bytes().expect("small");
            prop_assert_eq!(Envelope::from_bytes(&bytes).expect("valid"), envelope);
        }

        #[test]
        fn any_envelopes_round_trip_through_the_codec_with_any_chunking(
            envelopes in prop::collection::vec(any_envelope(), 0..6),
            chunk_sizes in prop::collection::vec(1usize..48, 1..16),
        ) {
            let wire = encode_all(&envelopes);
            prop_assert_eq!(decode_chunked(&wire, &chunk_sizes).expect("valid stream"), envelopes);
        }

        #[test]
        fn from_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = Envelope::from_bytes(&bytes);
        }

        #[test]
        fn codec_never_panics(
            bytes in prop::collection::vec(any::<u8>(), 0..256),
            chunk_sizes in prop::collection::vec(1usize..32, 1..8),
        ) {
            let _ = decode_chunked(&bytes, &chunk_sizes);
        }
    }
}
