//! The TCP-versus-UDP file transfer of the chat system (seed 003, task 3): the control frames on
//! the TCP connection, the data datagrams over UDP, and the rules a receiver applies to what it
//! is offered (file names, sizes, datagram counts).
//!
//! # The exchange
//!
//! Every transfer opens one TCP connection to the receiver (the *control connection*):
//!
//! 1. the sender sends [`Announce`]: transport, transfer id, file size, SHA-256 of the file,
//!    the datagram payload size and count (UDP), the file's name;
//! 2. the receiver answers [`Control::Accept`] or [`Control::Refused`] (a reason and a message);
//! 3. over TCP the file's bytes follow the announce on the same connection, raw: exactly `size`
//!    bytes, no framing (the announce gave the length). Over UDP the sender sends `count`
//!    datagrams to the receiver's UDP port (the same port number), each carrying the transfer
//!    id, a sequence number and one slice of the file, with no retransmission; then it sends
//!    [`Done`] on the control connection;
//! 4. the receiver saves the file and answers [`Report`]: what arrived, how long it took, whether
//!    the SHA-256 of what was written matches the announced one, and the name it was saved as.
//!
//! The receiver may send [`Control::Refused`] at any point instead of what it owes, then closes.
//!
//! # Control frames (TCP)
//!
//! Every control frame, in both directions, is a 3-byte header and a body; integers are
//! big-endian, strings UTF-8.
//!
//! | offset | size | field                                                        |
//! |--------|------|--------------------------------------------------------------|
//! | 0      | 1    | kind: `0x01` announce, `0x02` done (sender to receiver); `0x11` accept, `0x12` refused, `0x13` report (receiver to sender) |
//! | 1      | 2    | body length `n`, at most [`MAX_CONTROL_BODY`] (1024)         |
//! | 3      | n    | body, below                                                  |
//!
//! Announce (`0x01`), at least 57 bytes:
//!
//! | offset | size | field                                                              |
//! |--------|------|--------------------------------------------------------------------|
//! | 0      | 1    | protocol version, [`VERSION`] (1)                                  |
//! | 1      | 1    | transport: 1 TCP, 2 UDP                                            |
//! | 2      | 8    | transfer id (random; the datagrams carry it)                      |
//! | 10     | 8    | file size in bytes                                                 |
//! | 18     | 32   | SHA-256 of the whole file                                          |
//! | 50     | 2    | datagram payload size (UDP: 1 to [`MAX_DATAGRAM_PAYLOAD`]; TCP: 0) |
//! | 52     | 4    | datagram count, `ceil(size / payload)` (UDP; TCP: 0)               |
//! | 56     | 1    | name length `m`                                                    |
//! | 57     | m    | the file's name (see [`check_file_name`])                          |
//!
//! Done (`0x02`), 4 bytes: the number of datagrams the sender sent (u32).
//!
//! Accept (`0x11`): an empty body.
//!
//! Refused (`0x12`), at least 3 bytes:
//!
//! | offset | size | field                                                          |
//! |--------|------|----------------------------------------------------------------|
//! | 0      | 1    | reason code ([`RefuseReason`]; unknown codes are kept as such) |
//! | 1      | 2    | message length `m`, at most [`MAX_MESSAGE_LEN`]               |
//! | 3      | m    | message for a person                                           |
//!
//! Report (`0x13`), at least 95 bytes:
//!
//! | offset | size | field                                                                    |
//! |--------|------|--------------------------------------------------------------------------|
//! | 0      | 1    | transport: 1 TCP, 2 UDP                                                  |
//! | 1      | 1    | intact: 1 if the SHA-256 of the file written equals the announced one, else 0 |
//! | 2      | 8    | elapsed microseconds (see [`Report::elapsed_micros`])                    |
//! | 10     | 8    | file size (as announced)                                                 |
//! | 18     | 8    | file bytes that arrived (UDP: the payloads of distinct datagrams)        |
//! | 26     | 4    | datagrams the sender says it sent (from [`Done`]; TCP: 0)                |
//! | 30     | 4    | datagrams expected (the announced count; TCP: 0)                         |
//! | 34     | 4    | datagrams received: distinct sequence numbers (at most expected)         |
//! | 38     | 8    | datagrams reordered                                                      |
//! | 46     | 8    | datagrams duplicated                                                     |
//! | 54     | 8    | datagrams invalid: this transfer's id, but a sequence number out of range or a payload of the wrong length |
//! | 62     | 32   | SHA-256 of the file as written (holes zero-filled)                       |
//! | 94     | 1    | saved-as length `m`                                                      |
//! | 95     | m    | the name the file was saved under in the receiver's folder               |
//!
//! The counts are defined in [`DatagramCounts`].
//!
//! # Data datagrams (UDP)
//!
//! | offset | size | field                                                           |
//! |--------|------|-----------------------------------------------------------------|
//! | 0      | 1    | kind, [`DATAGRAM_KIND`] (`0x44`, ASCII `D`)                     |
//! | 1      | 8    | transfer id                                                     |
//! | 9      | 4    | sequence number, `0..count`                                     |
//! | 13     | p    | the file's bytes `seq * payload .. min((seq + 1) * payload, size)` |
//!
//! Every datagram but the last carries exactly the announced payload size; the last carries the
//! rest of the file ([`datagram_span`]). An IPv4 UDP datagram holds at most 65507 bytes, hence
//! [`MAX_DATAGRAM_PAYLOAD`] = 65507 - 13.
//!
//! # Decoding
//!
//! [`ControlCodec`] is bounded by its maximum body length and answers `Ok(None)` until a whole
//! frame has arrived; a frame of an unknown kind, over the bound, or whose body does not parse
//! exactly is an error naming the problem. [`decode_datagram`] never panics on garbage either.

use std::fmt;
use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use thiserror::Error;
use tokio_util::codec::{Decoder, Encoder};

use crate::fields::{FieldReader, TooShort};

/// The protocol version carried in [`Announce`].
pub const VERSION: u8 = 1;
/// Bytes of a control frame's header: kind and body length.
pub const CONTROL_HEADER_LEN: usize = 3;
/// The longest control body accepted or sent.
pub const MAX_CONTROL_BODY: usize = 1024;
/// The first byte of every data datagram.
pub const DATAGRAM_KIND: u8 = b'D';
/// Bytes of a data datagram's header: kind, transfer id, sequence number.
pub const DATAGRAM_HEADER_LEN: usize = 13;
/// The largest datagram payload: what an IPv4 UDP datagram holds (65507) minus the header.
pub const MAX_DATAGRAM_PAYLOAD: usize = 65_507 - DATAGRAM_HEADER_LEN;
/// The usual datagram payload: a datagram of 1213 bytes fits any path's MTU without IP
/// fragmentation.
pub const DEFAULT_DATAGRAM_PAYLOAD: usize = 1200;
/// The longest file name, in bytes (leaves room in 255 for a ` (n)` and a `.incomplete`).
pub const MAX_NAME_LEN: usize = 200;
/// The longest message of a [`Refusal`], in bytes.
pub const MAX_MESSAGE_LEN: usize = 512;
/// Bytes of a SHA-256 digest.
pub const DIGEST_LEN: usize = 32;

const KIND_ANNOUNCE: u8 = 0x01;
const KIND_DONE: u8 = 0x02;
const KIND_ACCEPT: u8 = 0x11;
const KIND_REFUSED: u8 = 0x12;
const KIND_REPORT: u8 = 0x13;

/// A SHA-256 digest.
pub type Digest = [u8; DIGEST_LEN];

/// How the file's bytes travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// On the control connection itself, after the announce.
    Tcp,
    /// As sequence-numbered datagrams, with no retransmission.
    Udp,
}

impl Transport {
    fn byte(self) -> u8 {
        match self {
            Transport::Tcp => 1,
            Transport::Udp => 2,
        }
    }

    fn from_byte(byte: u8) -> Option<Transport> {
        match byte {
            1 => Some(Transport::Tcp),
            2 => Some(Transport::Udp),
            _ => None,
        }
    }

    /// `"TCP"` or `"UDP"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "TCP",
            Transport::Udp => "UDP",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The sender's offer: what file, how big, how it will travel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announce {
    /// How the bytes travel.
    pub transport: Transport,
    /// A random id that the datagrams of this transfer carry.
    pub id: u64,
    /// The file's size in bytes.
    pub size: u64,
    /// SHA-256 of the whole file.
    pub sha256: Digest,
    /// Bytes of file in every datagram but the last (UDP; 0 for TCP).
    pub datagram_payload: u16,
    /// Datagrams the file takes, `ceil(size / datagram_payload)` (UDP; 0 for TCP).
    pub datagram_count: u32,
    /// The file's own name, without any folder.
    pub name: String,
}

impl Announce {
    /// The announce of a file sent over TCP.
    pub fn tcp(id: u64, name: impl Into<String>, size: u64, sha256: Digest) -> Announce {
        Announce {
            transport: Transport::Tcp,
            id,
            size,
            sha256,
            datagram_payload: 0,
            datagram_count: 0,
            name: name.into(),
        }
    }

    /// The announce of a file sent over UDP in datagrams of `payload` bytes of file, or `None`
    /// if `payload` is 0 or over [`MAX_DATAGRAM_PAYLOAD`], or the file would take more than
    /// `u32::MAX` datagrams.
    pub fn udp(
        id: u64,
        name: impl Into<String>,
        size: u64,
        sha256: Digest,
        payload: usize,
    ) -> Option<Announce> {
        let count = datagram_count(size, payload)?;
        Some(Announce {
            transport: Transport::Udp,
            id,
            size,
            sha256,
            datagram_payload: u16::try_from(payload).ok()?,
            datagram_count: count,
            name: name.into(),
        })
    }

    /// Whether a receiver with these limits takes this offer; the refusal to send if not.
    pub fn check(&self, limits: &Limits) -> Result<(), Refusal> {
        check_file_name(&self.name)
            .map_err(|err| Refusal::new(RefuseReason::BadName, err.to_string()))?;
        if self.size > limits.max_file_size {
            return Err(Refusal::new(
                RefuseReason::TooLarge,
                format!(
                    "a file of {} bytes is over the receiver's limit of {} bytes",
                    self.size, limits.max_file_size
                ),
            ));
        }
        match self.transport {
            Transport::Tcp => self.check_tcp_datagrams(),
            Transport::Udp => self.check_udp_datagrams(limits),
        }
    }

    fn check_tcp_datagrams(&self) -> Result<(), Refusal> {
        if self.datagram_payload != 0 || self.datagram_count != 0 {
            return Err(Refusal::new(
                RefuseReason::BadDatagrams,
                "a TCP transfer announces a datagram size and count of 0",
            ));
        }
        Ok(())
    }

    fn check_udp_datagrams(&self, limits: &Limits) -> Result<(), Refusal> {
        let payload = usize::from(self.datagram_payload);
        let bad = |message: String| Err(Refusal::new(RefuseReason::BadDatagrams, message));
        if payload == 0 || payload > MAX_DATAGRAM_PAYLOAD {
            return bad(format!(
                "a datagram payload of {payload} bytes is not between 1 and {MAX_DATAGRAM_PAYLOAD}"
            ));
        }
        if datagram_count(self.size, payload) != Some(self.datagram_count) {
            return bad(format!(
                "{} datagrams of {payload} bytes do not make a file of {} bytes",
                self.datagram_count, self.size
            ));
        }
        if self.datagram_count > limits.max_datagrams {
            return bad(format!(
                "{} datagrams are over the receiver's limit of {}; send larger datagrams",
                self.datagram_count, limits.max_datagrams
            ));
        }
        Ok(())
    }
}

/// What a receiver accepts, for [`Announce::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest file, in bytes.
    pub max_file_size: u64,
    /// The most datagrams one UDP transfer may take (the receiver keeps a bitmap of them).
    pub max_datagrams: u32,
}

/// The end of a UDP transfer's datagrams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Done {
    /// How many datagrams the sender sent.
    pub datagrams_sent: u32,
}

/// Why a receiver refused or gave up on a transfer (the first byte of a refused frame).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefuseReason {
    /// 1: the sender's frames could not be understood.
    Protocol,
    /// 2: the file name is not acceptable ([`check_file_name`]).
    BadName,
    /// 3: the file is over the receiver's size limit.
    TooLarge,
    /// 4: the datagram size or count is inconsistent or over the receiver's limits.
    BadDatagrams,
    /// 5: the receiver is serving as many transfers as it will at once.
    Busy,
    /// 6: another transfer in progress uses the same transfer id.
    DuplicateId,
    /// 7: the receiver could not write the file (its own fault).
    ReceiverFailed,
    /// 8: the sender went quiet for too long.
    Timeout,
    /// 9: the receiver is shutting down.
    ShuttingDown,
    /// A code this version does not know.
    Other(u8),
}

impl RefuseReason {
    fn byte(self) -> u8 {
        match self {
            RefuseReason::Protocol => 1,
            RefuseReason::BadName => 2,
            RefuseReason::TooLarge => 3,
            RefuseReason::BadDatagrams => 4,
            RefuseReason::Busy => 5,
            RefuseReason::DuplicateId => 6,
            RefuseReason::ReceiverFailed => 7,
            RefuseReason::Timeout => 8,
            RefuseReason::ShuttingDown => 9,
            RefuseReason::Other(code) => code,
        }
    }

    fn from_byte(byte: u8) -> RefuseReason {
        match byte {
            1 => RefuseReason::Protocol,
            2 => RefuseReason::BadName,
            3 => RefuseReason::TooLarge,
            4 => RefuseReason::BadDatagrams,
            5 => RefuseReason::Busy,
            6 => RefuseReason::DuplicateId,
            7 => RefuseReason::ReceiverFailed,
            8 => RefuseReason::Timeout,
            9 => RefuseReason::ShuttingDown,
            code => RefuseReason::Other(code),
        }
    }
}

impl fmt::Display for RefuseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RefuseReason::Protocol => f.write_str("protocol error"),
            RefuseReason::BadName => f.write_str("bad file name"),
            RefuseReason::TooLarge => f.write_str("file too large"),
            RefuseReason::BadDatagrams => f.write_str("bad datagram size or count"),
            RefuseReason::Busy => f.write_str("receiver busy"),
            RefuseReason::DuplicateId => f.write_str("transfer id in use"),
            RefuseReason::ReceiverFailed => f.write_str("receiver failed"),
            RefuseReason::Timeout => f.write_str("timed out"),
            RefuseReason::ShuttingDown => f.write_str("receiver shutting down"),
            RefuseReason::Other(code) => write!(f, "reason {code}"),
        }
    }
}

/// A receiver's no: a reason code and a message for a person.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{reason}: {message}")]
pub struct Refusal {
    /// The reason code.
    pub reason: RefuseReason,
    /// What a person reads, at most [`MAX_MESSAGE_LEN`] bytes.
    pub message: String,
}

impl Refusal {
    /// A refusal; the message is cut (at a character boundary) to [`MAX_MESSAGE_LEN`] bytes.
    pub fn new(reason: RefuseReason, message: impl Into<String>) -> Refusal {
        let mut message = message.into();
        if message.len() > MAX_MESSAGE_LEN {
            let mut end = MAX_MESSAGE_LEN;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        Refusal { reason, message }
    }
}

/// What the receiver counted of a UDP transfer's datagrams (all 0 for TCP).
///
/// Every arrival of a datagram with this transfer's id is exactly one of: *fresh* (its sequence
/// number had not arrived before), a *duplicate* (it had), or *invalid* (sequence number out of
/// range, or a payload whose length is not what that sequence number must carry).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DatagramCounts {
    /// Datagrams the sender says it sent.
    pub sent: u32,
    /// Datagrams the file takes: the announced count.
    pub expected: u32,
    /// Distinct sequence numbers that arrived (fresh arrivals); at most `expected`.
    pub received: u32,
    /// Fresh arrivals whose sequence number is lower than the highest one seen before them.
    pub reordered: u64,
    /// Arrivals of a sequence number that had already arrived.
    pub duplicated: u64,
    /// Arrivals that could not be part of the file.
    pub invalid: u64,
}

impl DatagramCounts {
    /// Sequence numbers that never arrived: `expected - received`.
    pub fn lost(&self) -> u32 {
        self.expected.saturating_sub(self.received)
    }
}

/// The receiver's account of one transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// How the bytes travelled.
    pub transport: Transport,
    /// Whether the SHA-256 of the file as written equals the announced one.
    pub intact: bool,
    /// Microseconds from the announce's arrival to the end of the data: over TCP the last byte
    /// of the body; over UDP the later of the done message and the last datagram (the wait for
    /// stragglers after that, and writing the file to disk, are not counted).
    pub elapsed_micros: u64,
    /// The announced file size.
    pub file_size: u64,
    /// Bytes of the file that arrived (UDP: in distinct datagrams; the rest are holes).
    pub bytes_received: u64,
    /// The datagram counts (UDP; all 0 for TCP).
    pub datagrams: DatagramCounts,
    /// SHA-256 of the file as written, holes zero-filled.
    pub sha256: Digest,
    /// The name the receiver saved the file under, in its folder.
    pub saved_as: String,
}

impl Report {
    /// The elapsed time.
    pub fn elapsed(&self) -> Duration {
        Duration::from_micros(self.elapsed_micros)
    }

    /// The file's size over the elapsed time, in MiB/s (file bytes, whether or not they arrived).
    pub fn mib_per_second(&self) -> f64 {
        self.file_size as f64 / (1024.0 * 1024.0) / self.elapsed().as_secs_f64().max(1e-6)
    }

    /// Whether every byte of the file arrived (no holes).
    pub fn is_complete(&self) -> bool {
        self.bytes_received == self.file_size
    }
}

/// One control frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Sender to receiver: the offer.
    Announce(Announce),
    /// Sender to receiver: the UDP datagrams are all sent.
    Done(Done),
    /// Receiver to sender: go ahead.
    Accept,
    /// Receiver to sender: no, or no more.
    Refused(Refusal),
    /// Receiver to sender: the outcome.
    Report(Report),
}

impl Control {
    /// The frame's name, for error messages.
    pub fn name(&self) -> &'static str {
        match self {
            Control::Announce(_) => "announce",
            Control::Done(_) => "done",
            Control::Accept => "accept",
            Control::Refused(_) => "refused",
            Control::Report(_) => "report",
        }
    }
}

/// Everything that can go wrong framing control messages.
#[derive(Debug, Error)]
pub enum ControlError {
    /// The peer sent a frame of a kind this side does not know.
    #[error("the peer sent a control frame of unknown kind 0x{0:02x}")]
    UnknownKind(u8),
    /// The peer announced a body longer than this side accepts.
    #[error("the peer announced a control frame body of {len} bytes, over the limit of {max}")]
    TooLong {
        /// The announced body length.
        len: usize,
        /// This side's limit.
        max: usize,
    },
    /// The peer sent a body that does not parse as its kind.
    #[error("the peer sent a malformed {kind} frame: {problem}")]
    Malformed {
        /// The frame's kind.
        kind: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// The stream ended inside a frame.
    #[error(
        "the peer closed the connection inside a control frame ({buffered} bytes of it arrived)"
    )]
    Truncated {
        /// Bytes of the unfinished frame that arrived.
        buffered: usize,
    },
    /// Local misuse: a frame too large to send (a name or message over its bound).
    #[error("cannot send a {kind} frame: {problem}")]
    Unsendable {
        /// The frame's kind.
        kind: &'static str,
        /// What is too large.
        problem: String,
    },
    /// Reading or writing the stream failed.
    #[error("control connection I/O failed: {0}")]
    Io(#[from] std::io::Error),
}

impl ControlError {
    /// True when the peer broke the protocol (as opposed to local misuse or I/O).
    pub fn is_peer_fault(&self) -> bool {
        matches!(
            self,
            ControlError::UnknownKind(_)
                | ControlError::TooLong { .. }
                | ControlError::Malformed { .. }
                | ControlError::Truncated { .. }
        )
    }
}

/// `tokio_util` codec of control frames, bounded by a maximum body length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlCodec {
    max_body: usize,
}

impl ControlCodec {
    /// A codec that accepts bodies of at most `max_body` bytes (capped at `u16::MAX`).
    pub fn new(max_body: usize) -> ControlCodec {
        ControlCodec {
            max_body: max_body.min(usize::from(u16::MAX)),
        }
    }
}

impl Default for ControlCodec {
    /// A codec limited to [`MAX_CONTROL_BODY`].
    fn default() -> Self {
        ControlCodec::new(MAX_CONTROL_BODY)
    }
}

impl Decoder for ControlCodec {
    type Item = Control;
    type Error = ControlError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Control>, ControlError> {
        let Some(&[kind, hi, lo]) = src.first_chunk::<CONTROL_HEADER_LEN>() else {
            src.reserve(CONTROL_HEADER_LEN - src.len());
            return Ok(None);
        };
        let kind_name = kind_name(kind).ok_or(ControlError::UnknownKind(kind))?;
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        if len > self.max_body {
            return Err(ControlError::TooLong {
                len,
                max: self.max_body,
            });
        }
        if src.len() < CONTROL_HEADER_LEN + len {
            src.reserve(CONTROL_HEADER_LEN + len - src.len());
            return Ok(None);
        }
        src.advance(CONTROL_HEADER_LEN);
        let body = src.split_to(len);
        decode_body(kind, &body)
            .map(Some)
            .map_err(|problem| ControlError::Malformed {
                kind: kind_name,
                problem,
            })
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Control>, ControlError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() => Ok(None),
            None => Err(ControlError::Truncated {
                buffered: src.len(),
            }),
        }
    }
}

impl Encoder<&Control> for ControlCodec {
    type Error = ControlError;

    fn encode(&mut self, frame: &Control, dst: &mut BytesMut) -> Result<(), ControlError> {
        let unsendable = |problem: String| ControlError::Unsendable {
            kind: frame.name(),
            problem,
        };
        let mut body = Vec::new();
        encode_body(frame, &mut body).map_err(unsendable)?;
        if body.len() > self.max_body {
            return Err(unsendable(format!(
                "its body of {} bytes is over the limit of {}",
                body.len(),
                self.max_body
            )));
        }
        let len = u16::try_from(body.len()).map_err(|_| unsendable("too long".into()))?;
        dst.reserve(CONTROL_HEADER_LEN + body.len());
        dst.put_u8(kind_byte(frame));
        dst.put_u16(len);
        dst.put_slice(&body);
        Ok(())
    }
}

impl Encoder<Control> for ControlCodec {
    type Error = ControlError;

    fn encode(&mut self, frame: Control, dst: &mut BytesMut) -> Result<(), ControlError> {
        self.encode(&frame, dst)
    }
}

fn kind_byte(frame: &Control) -> u8 {
    match frame {
        Control::Announce(_) => KIND_ANNOUNCE,
        Control::Done(_) => KIND_DONE,
        Control::Accept => KIND_ACCEPT,
        Control::Refused(_) => KIND_REFUSED,
        Control::Report(_) => KIND_REPORT,
    }
}

fn kind_name(kind: u8) -> Option<&'static str> {
    match kind {
        KIND_ANNOUNCE => Some("announce"),
        KIND_DONE => Some("done"),
        KIND_ACCEPT => Some("accept"),
        KIND_REFUSED => Some("refused"),
        KIND_REPORT => Some("report"),
        _ => None,
    }
}

fn encode_body(frame: &Control, out: &mut Vec<u8>) -> Result<(), String> {
    match frame {
        Control::Announce(announce) => encode_announce(announce, out),
        Control::Done(done) => {
            out.put_u32(done.datagrams_sent);
            Ok(())
        }
        Control::Accept => Ok(()),
        Control::Refused(refusal) => encode_refusal(refusal, out),
        Control::Report(report) => encode_report(report, out),
    }
}

fn encode_announce(announce: &Announce, out: &mut Vec<u8>) -> Result<(), String> {
    out.put_u8(VERSION);
    out.put_u8(announce.transport.byte());
    out.put_u64(announce.id);
    out.put_u64(announce.size);
    out.put_slice(&announce.sha256);
    out.put_u16(announce.datagram_payload);
    out.put_u32(announce.datagram_count);
    put_short_string(out, "file name", &announce.name)
}

fn encode_refusal(refusal: &Refusal, out: &mut Vec<u8>) -> Result<(), String> {
    if refusal.message.len() > MAX_MESSAGE_LEN {
        return Err(format!(
            "its message of {} bytes is over the limit of {MAX_MESSAGE_LEN}",
            refusal.message.len()
        ));
    }
    out.put_u8(refusal.reason.byte());
    out.put_u16(refusal.message.len() as u16); // at most MAX_MESSAGE_LEN
    out.put_slice(refusal.message.as_bytes());
    Ok(())
}

fn encode_report(report: &Report, out: &mut Vec<u8>) -> Result<(), String> {
    let counts = &report.datagrams;
    out.put_u8(report.transport.byte());
    out.put_u8(u8::from(report.intact));
    out.put_u64(report.elapsed_micros);
    out.put_u64(report.file_size);
    out.put_u64(report.bytes_received);
    out.put_u32(counts.sent);
    out.put_u32(counts.expected);
    out.put_u32(counts.received);
    out.put_u64(counts.reordered);
    out.put_u64(counts.duplicated);
    out.put_u64(counts.invalid);
    out.put_slice(&report.sha256);
    put_short_string(out, "saved-as name", &report.saved_as)
}

/// Appends a string with a one-byte length.
fn put_short_string(out: &mut Vec<u8>, what: &str, text: &str) -> Result<(), String> {
    let len = u8::try_from(text.len())
        .map_err(|_| format!("the {what} is {} bytes, over 255", text.len()))?;
    out.put_u8(len);
    out.put_slice(text.as_bytes());
    Ok(())
}

fn decode_body(kind: u8, body: &[u8]) -> Result<Control, String> {
    let mut reader = Reader(FieldReader::new(body));
    let frame = match kind {
        KIND_ANNOUNCE => Control::Announce(decode_announce(&mut reader)?),
        KIND_DONE => Control::Done(Done {
            datagrams_sent: reader.u32()?,
        }),
        KIND_ACCEPT => Control::Accept,
        KIND_REFUSED => Control::Refused(decode_refusal(&mut reader)?),
        KIND_REPORT => Control::Report(decode_report(&mut reader)?),
        other => return Err(format!("unknown kind 0x{other:02x}")),
    };
    reader.finish()?;
    Ok(frame)
}

fn decode_transport(byte: u8) -> Result<Transport, String> {
    Transport::from_byte(byte).ok_or_else(|| format!("unknown transport {byte} (1 TCP, 2 UDP)"))
}

fn decode_announce(reader: &mut Reader<'_>) -> Result<Announce, String> {
    let version = reader.u8()?;
    if version != VERSION {
        return Err(format!(
            "protocol version {version}, this side speaks {VERSION}"
        ));
    }
    Ok(Announce {
        transport: decode_transport(reader.u8()?)?,
        id: reader.u64()?,
        size: reader.u64()?,
        sha256: reader.digest()?,
        datagram_payload: reader.u16()?,
        datagram_count: reader.u32()?,
        name: reader.short_string("file name")?,
    })
}

fn decode_refusal(reader: &mut Reader<'_>) -> Result<Refusal, String> {
    let reason = RefuseReason::from_byte(reader.u8()?);
    let len = usize::from(reader.u16()?);
    if len > MAX_MESSAGE_LEN {
        return Err(format!(
            "a message of {len} bytes, over the limit of {MAX_MESSAGE_LEN}"
        ));
    }
    let message = reader.string(len, "message")?;
    Ok(Refusal { reason, message })
}

fn decode_report(reader: &mut Reader<'_>) -> Result<Report, String> {
    let transport = decode_transport(reader.u8()?)?;
    let intact = match reader.u8()? {
        0 => false,
        1 => true,
        other => return Err(format!("intact flag {other}, not 0 or 1")),
    };
    let elapsed_micros = reader.u64()?;
    let file_size = reader.u64()?;
    let bytes_received = reader.u64()?;
    let datagrams = DatagramCounts {
        sent: reader.u32()?,
        expected: reader.u32()?,
        received: reader.u32()?,
        reordered: reader.u64()?,
        duplicated: reader.u64()?,
        invalid: reader.u64()?,
    };
    if bytes_received > file_size || datagrams.received > datagrams.expected {
        return Err("more received than the file holds".into());
    }
    Ok(Report {
        transport,
        intact,
        elapsed_micros,
        file_size,
        bytes_received,
        datagrams,
        sha256: reader.digest()?,
        saved_as: reader.short_string("saved-as name")?,
    })
}

/// The fields of a control frame's body: [`FieldReader`]'s, plus its strings and digest.
struct Reader<'a>(FieldReader<'a>);

impl<'a> std::ops::Deref for Reader<'a> {
    type Target = FieldReader<'a>;

    fn deref(&self) -> &FieldReader<'a> {
        &self.0
    }
}

impl std::ops::DerefMut for Reader<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

/// A body too short for its fields, in the words of this format's errors.
impl From<TooShort> for String {
    fn from(short: TooShort) -> String {
        format!(
            "the body ends early ({} bytes left, {} needed)",
            short.left, short.needed
        )
    }
}

impl Reader<'_> {
    fn digest(&mut self) -> Result<Digest, String> {
        Ok(self.array()?)
    }

    fn string(&mut self, len: usize, what: &str) -> Result<String, String> {
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| format!("the {what} is not UTF-8"))
    }

    fn short_string(&mut self, what: &str) -> Result<String, String> {
        let len = usize::from(self.u8()?);
        self.string(len, what)
    }

    fn finish(&self) -> Result<(), String> {
        match self.remaining() {
            0 => Ok(()),
            left => Err(format!("{left} bytes after the last field")),
        }
    }
}

/// The header of a data datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DatagramHeader {
    /// The transfer it belongs to.
    pub id: u64,
    /// Its sequence number, `0..count`.
    pub seq: u32,
}

impl DatagramHeader {
    /// The header's bytes, to put in front of the payload.
    pub fn to_bytes(self) -> [u8; DATAGRAM_HEADER_LEN] {
        let mut bytes = [0; DATAGRAM_HEADER_LEN];
        bytes[0] = DATAGRAM_KIND;
        bytes[1..9].copy_from_slice(&self.id.to_be_bytes());
        bytes[9..13].copy_from_slice(&self.seq.to_be_bytes());
        bytes
    }
}

/// Why a datagram is not a data datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum DatagramError {
    /// Shorter than the header.
    #[error("a datagram of {0} bytes is shorter than the {DATAGRAM_HEADER_LEN}-byte header")]
    TooShort(usize),
    /// The first byte is not [`DATAGRAM_KIND`].
    #[error("a datagram of unknown kind 0x{0:02x}")]
    UnknownKind(u8),
}

/// A whole data datagram: header, then payload.
pub fn encode_datagram(header: DatagramHeader, payload: &[u8]) -> Vec<u8> {
    let mut datagram = Vec::with_capacity(DATAGRAM_HEADER_LEN + payload.len());
    datagram.extend_from_slice(&header.to_bytes());
    datagram.extend_from_slice(payload);
    datagram
}

/// Splits a received datagram into its header and payload.
pub fn decode_datagram(datagram: &[u8]) -> Result<(DatagramHeader, &[u8]), DatagramError> {
    let (header, payload) = datagram
        .split_first_chunk::<DATAGRAM_HEADER_LEN>()
        .ok_or(DatagramError::TooShort(datagram.len()))?;
    if header[0] != DATAGRAM_KIND {
        return Err(DatagramError::UnknownKind(header[0]));
    }
    let mut id = [0; 8];
    id.copy_from_slice(&header[1..9]);
    let mut seq = [0; 4];
    seq.copy_from_slice(&header[9..13]);
    let header = DatagramHeader {
        id: u64::from_be_bytes(id),
        seq: u32::from_be_bytes(seq),
    };
    Ok((header, payload))
}

/// Datagrams a file of `size` bytes takes with `payload` bytes in each, or `None` if `payload`
/// is 0 or over [`MAX_DATAGRAM_PAYLOAD`], or the count would not fit a `u32`.
pub fn datagram_count(size: u64, payload: usize) -> Option<u32> {
    if payload == 0 || payload > MAX_DATAGRAM_PAYLOAD {
        return None;
    }
    u32::try_from(size.div_ceil(payload as u64)).ok()
}

/// Where datagram `seq` of a file of `size` bytes in `payload`-byte datagrams belongs: its offset
/// in the file and its length; `None` if there is no such datagram.
pub fn datagram_span(seq: u32, size: u64, payload: usize) -> Option<(u64, usize)> {
    let count = datagram_count(size, payload)?;
    if seq >= count {
        return None;
    }
    let offset = u64::from(seq) * payload as u64;
    let len = (size - offset).min(payload as u64) as usize; // at most payload
    Some((offset, len))
}

/// Why a file name is refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NameError {
    /// The name is empty.
    #[error("the file name is empty")]
    Empty,
    /// The name is longer than [`MAX_NAME_LEN`] bytes.
    #[error("the file name is {0} bytes, over the limit of {MAX_NAME_LEN}")]
    TooLong(usize),
    /// The name starts with a dot (a hidden file, `.` or `..`).
    #[error("the file name {0:?} starts with a dot")]
    LeadingDot(String),
    /// The name holds a path separator, a drive colon or a control character.
    #[error("the file name {0:?} contains a path separator, ':' or a control character")]
    BadCharacter(String),
}

/// Checks a file name a receiver is asked to create: not empty, at most [`MAX_NAME_LEN`]
/// bytes, no leading dot, no `/`, `\`, `:` or control character. So it always names a plain
/// file inside the receiver's folder.
pub fn check_file_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong(name.len()));
    }
    if name.starts_with('.') {
        return Err(NameError::LeadingDot(name.to_owned()));
    }
    if name
        .chars()
        .any(|c| matches!(c, '/' | '\\' | ':') || c.is_control())
    {
        return Err(NameError::BadCharacter(name.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;
    use proptest::prelude::*;

    fn announce() -> Announce {
        Announce::udp(0x0102_0304_0506_0708, "clip.mp4", 2_500, [7; 32], 1000).expect("valid")
    }

    fn report() -> Report {
        Report {
            transport: Transport::Udp,
            intact: false,
            elapsed_micros: 12_345,
            file_size: 2_500,
            bytes_received: 1_500,
            datagrams: DatagramCounts {
                sent: 3,
                expected: 3,
                received: 2,
                reordered: 1,
                duplicated: 4,
                invalid: 5,
            },
            sha256: [9; 32],
            saved_as: "clip.mp4.incomplete".into(),
        }
    }

    fn all_frames() -> Vec<Control> {
        vec![
            Control::Announce(announce()),
            Control::Announce(Announce::tcp(1, "notes é.pdf", 0, [0; 32])),
            Control::Accept,
            Control::Done(Done { datagrams_sent: 3 }),
            Control::Refused(Refusal::new(RefuseReason::Busy, "3 transfers at once")),
            Control::Refused(Refusal::new(RefuseReason::Other(200), "")),
            Control::Report(report()),
        ]
    }

    fn encode(frames: &[Control]) -> BytesMut {
        let mut wire = BytesMut::new();
        for frame in frames {
            ControlCodec::default()
                .encode(frame, &mut wire)
                .expect("sendable");
        }
        wire
    }

    fn decode_one(wire: &[u8]) -> Result<Option<Control>, ControlError> {
        ControlCodec::default().decode(&mut BytesMut::from(wire))
    }

    #[test]
    fn every_frame_round_trips() {
        let frames = all_frames();
        let wire = encode(&frames);
        let decoded = testing::decode_chunked(ControlCodec::default(), &wire, &[wire.len()])
            .expect("valid stream");
        assert_eq!(decoded, frames);
    }

    #[test]
    fn frames_decode_however_the_stream_is_split() {
        let frames = all_frames();
        let wire = encode(&frames);
        testing::assert_decodes_at_every_split(ControlCodec::default, &wire, &frames);
    }

    #[test]
    fn the_announce_is_laid_out_as_documented() {
        let wire = encode(&[Control::Announce(announce())]);
        assert_eq!(wire[0], 0x01);
        assert_eq!(u16::from_be_bytes([wire[1], wire[2]]), 57 + 8);
        let body = &wire[3..];
        assert_eq!(body[0], VERSION);
        assert_eq!(body[1], 2);
        assert_eq!(body[2..10], 0x0102_0304_0506_0708u64.to_be_bytes());
        assert_eq!(body[10..18], 2_500u64.to_be_bytes());
        assert_eq!(body[18..50], [7; 32]);
        assert_eq!(body[50..52], 1000u16.to_be_bytes());
        assert_eq!(body[52..56], 3u32.to_be_bytes());
        assert_eq!(body[56], 8);
        assert_eq!(&body[57..], b"clip.mp4");
    }

    #[test]
    fn the_report_is_laid_out_as_documented() {
        let wire = encode(&[Control::Report(report())]);
        assert_eq!(&wire[..3], &[0x13, 0, 95 + 19]);
        let body = &wire[3..];
        assert_eq!(body[..2], [2, 0]);
        assert_eq!(body[34..38], 2u32.to_be_bytes());
        assert_eq!(body[62..94], [9; 32]);
        assert_eq!(&body[95..], b"clip.mp4.incomplete");
    }

    #[test]
    fn an_incomplete_frame_waits() {
        let wire = encode(&[Control::Report(report())]);
        for cut in 0..wire.len() {
            assert!(
                decode_one(&wire[..cut]).expect("not yet").is_none(),
                "{cut}"
            );
        }
    }

    #[test]
    fn eof_inside_a_frame_is_reported() {
        let wire = encode(&[Control::Accept, Control::Done(Done { datagrams_sent: 1 })]);
        let err = testing::decode_chunked(ControlCodec::default(), &wire[..wire.len() - 1], &[2])
            .expect_err("truncated");
        assert!(
            matches!(err, ControlError::Truncated { buffered: 6 }),
            "{err}"
        );
    }

    #[test]
    fn oversize_bodies_are_refused_before_they_arrive() {
        let err = decode_one(&[0x01, 0x04, 0x01]).expect_err("1025 > 1024");
        assert!(
            matches!(
                err,
                ControlError::TooLong {
                    len: 1025,
                    max: 1024
                }
            ),
            "{err}"
        );
        assert!(err.is_peer_fault());
        let err = ControlCodec::new(10)
            .encode(&Control::Announce(announce()), &mut BytesMut::new())
            .expect_err("65 > 10");
        assert!(matches!(err, ControlError::Unsendable { .. }), "{err}");
        assert!(!err.is_peer_fault());
    }

    #[test]
    fn names_over_255_bytes_cannot_be_sent() {
        let long = Announce::tcp(1, "x".repeat(256), 1, [0; 32]);
        let err = ControlCodec::default()
            .encode(&Control::Announce(long), &mut BytesMut::new())
            .expect_err("256 > 255");
        assert!(err.to_string().contains("256 bytes"), "{err}");
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        let unknown = decode_one(b"5         alice").expect_err("a chat frame");
        assert!(
            matches!(unknown, ControlError::UnknownKind(b'5')),
            "{unknown}"
        );

        let cases: [(&[u8], &str); 7] = [
            (&[0x11, 0, 1, 0], "after the last field"),
            (&[0x02, 0, 3, 0, 0, 0], "ends early"),
            (&[0x12, 0, 4, 1, 0, 1, 0xff], "not UTF-8"),
            (&[0x12, 0, 3, 1, 0x02, 0x01], "over the limit"),
            (&[0x01, 0, 1, 9], "protocol version 9"),
            (&[0x01, 0, 2, 1, 7], "unknown transport 7"),
            (&[0x13, 0, 2, 1, 2], "intact flag 2"),
        ];
        for (wire, expected) in cases {
            let err = decode_one(wire).expect_err("garbage");
            assert!(
                matches!(err, ControlError::Malformed { .. }) && err.is_peer_fault(),
                "{err}"
            );
            assert!(err.to_string().contains(expected), "{err} lacks {expected}");
        }
    }

    #[test]
    fn a_report_that_received_more_than_expected_is_malformed() {
        let mut bad = report();
        bad.datagrams.received = 4;
        let wire = encode(&[Control::Report(bad)]);
        let err = decode_one(&wire).expect_err("4 > 3");
        assert!(err.to_string().contains("more received"), "{err}");
    }

    #[test]
    fn refusal_messages_are_cut_at_a_character_boundary() {
        let refusal = Refusal::new(RefuseReason::Protocol, "é".repeat(MAX_MESSAGE_LEN));
        assert_eq!(refusal.message.len(), MAX_MESSAGE_LEN);
        let refusal = Refusal::new(RefuseReason::Protocol, format!("x{}", "é".repeat(300)));
        assert_eq!(refusal.message.len(), MAX_MESSAGE_LEN - 1);
        assert_eq!(
            refusal.to_string(),
            format!("protocol error: {}", refusal.message)
        );
    }

    #[test]
    fn datagrams_round_trip_and_garbage_is_refused() {
        let header = DatagramHeader {
            id: u64::MAX - 1,
            seq: 77,
        };
        let datagram = encode_datagram(header, b"payload");
        assert_eq!(datagram[0], b'D');
        assert_eq!(decode_datagram(&datagram), Ok((header, &b"payload"[..])));
        assert_eq!(
            decode_datagram(&datagram[..DATAGRAM_HEADER_LEN]),
            Ok((header, &b""[..]))
        );
        assert_eq!(
            decode_datagram(&datagram[..12]),
            Err(DatagramError::TooShort(12))
        );
        assert_eq!(decode_datagram(&[]), Err(DatagramError::TooShort(0)));
        assert_eq!(
            decode_datagram(&[b'X'; 20]),
            Err(DatagramError::UnknownKind(b'X'))
        );
    }

    #[test]
    fn datagram_spans_cover_the_file_exactly() {
        assert_eq!(datagram_count(0, 1200), Some(0));
        assert_eq!(datagram_count(1200, 1200), Some(1));
        assert_eq!(datagram_count(1201, 1200), Some(2));
        assert_eq!(datagram_count(10, 0), None);
        assert_eq!(datagram_count(10, MAX_DATAGRAM_PAYLOAD + 1), None);
        assert_eq!(datagram_count(u64::MAX, 1), None);
        assert_eq!(datagram_span(0, 2500, 1000), Some((0, 1000)));
        assert_eq!(datagram_span(2, 2500, 1000), Some((2000, 500)));
        assert_eq!(datagram_span(3, 2500, 1000), None);
        assert_eq!(datagram_span(0, 0, 1000), None);
    }

    #[test]
    fn file_names_that_escape_the_folder_or_hide_are_refused() {
        for good in [
            "clip.mp4",
            "notes é (1).pdf",
            "a",
            &"x".repeat(MAX_NAME_LEN),
        ] {
            assert_eq!(check_file_name(good), Ok(()), "{good}");
        }
        assert_eq!(check_file_name(""), Err(NameError::Empty));
        assert_eq!(
            check_file_name(&"x".repeat(MAX_NAME_LEN + 1)),
            Err(NameError::TooLong(MAX_NAME_LEN + 1))
        );
        for hidden in [".", "..", ".bashrc"] {
            assert!(matches!(
                check_file_name(hidden),
                Err(NameError::LeadingDot(_))
            ));
        }
        for bad in ["a/../x", "a/b", "a\\b", "C:x", "a\nb", "a\0b"] {
            assert!(
                matches!(check_file_name(bad), Err(NameError::BadCharacter(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn announces_are_checked_against_the_limits() {
        let limits = Limits {
            max_file_size: 10_000,
            max_datagrams: 100,
        };
        assert_eq!(announce().check(&limits), Ok(()));
        let reason = |announce: Announce| announce.check(&limits).expect_err("refused").reason;
        let too_big = Announce::tcp(1, "a", 10_001, [0; 32]);
        assert_eq!(reason(too_big), RefuseReason::TooLarge);
        let hidden = Announce::tcp(1, ".a", 1, [0; 32]);
        assert_eq!(reason(hidden), RefuseReason::BadName);
        let mut miscounted = announce();
        miscounted.datagram_count = 4;
        assert_eq!(reason(miscounted), RefuseReason::BadDatagrams);
        let mut zero = announce();
        zero.datagram_payload = 0;
        assert_eq!(reason(zero), RefuseReason::BadDatagrams);
        let tiny = Announce::udp(1, "a", 10_000, [0; 32], 10).expect("valid");
        let refusal = tiny.check(&limits).expect_err("1000 datagrams > 100");
        assert!(refusal.message.contains("limit of 100"), "{refusal}");
        let mut tcp_with_datagrams = Announce::tcp(1, "a", 1, [0; 32]);
        tcp_with_datagrams.datagram_count = 1;
        assert_eq!(reason(tcp_with_datagrams), RefuseReason::BadDatagrams);
    }

    #[test]
    fn reports_compute_loss_and_throughput() {
        let report = report();
        assert_eq!(report.datagrams.lost(), 1);
        assert!(!report.is_complete());
        assert_eq!(report.elapsed(), Duration::from_micros(12_345));
        let one_mib_per_second = Report {
            file_size: 1024 * 1024,
            elapsed_micros: 1_000_000,
            ..report
        };
        assert!((one_mib_per_second.mib_per_second() - 1.0).abs() < 1e-9);
    }

    fn any_counts() -> impl Strategy<Value = DatagramCounts> {
        (
            any::<u32>(),
            any::<u32>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
        )
            .prop_flat_map(|(sent, expected, reordered, duplicated, invalid)| {
                (0..=expected).prop_map(move |received| DatagramCounts {
                    sent,
                    expected,
                    received,
                    reordered,
                    duplicated,
                    invalid,
                })
            })
    }

    fn any_report() -> impl Strategy<Value = Report> {
        (
            any::<bool>(),
            any::<bool>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any_counts(),
            any::<[u8; 32]>(),
            "[^/]{0,60}",
        )
            .prop_map(
                |(udp, intact, elapsed_micros, a, b, datagrams, sha256, saved_as)| Report {
                    transport: if udp { Transport::Udp } else { Transport::Tcp },
                    intact,
                    elapsed_micros,
                    file_size: a.max(b),
                    bytes_received: a.min(b),
                    datagrams,
                    sha256,
                    saved_as,
                },
            )
    }

    fn any_announce() -> impl Strategy<Value = Announce> {
        (
            any::<bool>(),
            any::<u64>(),
            any::<u64>(),
            any::<[u8; 32]>(),
            any::<u16>(),
            any::<u32>(),
            "\\PC{0,50}",
        )
            .prop_map(|(udp, id, size, sha256, payload, count, name)| Announce {
                transport: if udp { Transport::Udp } else { Transport::Tcp },
                id,
                size,
                sha256,
                datagram_payload: payload,
                datagram_count: count,
                name,
            })
    }

    fn any_frame() -> impl Strategy<Value = Control> {
        prop_oneof![
            any_announce().prop_map(Control::Announce),
            any::<u32>().prop_map(|datagrams_sent| Control::Done(Done { datagrams_sent })),
            Just(Control::Accept),
            (any::<u8>(), "\\PC{0,100}").prop_map(|(code, message)| Control::Refused(
                Refusal::new(RefuseReason::from_byte(code), message)
            )),
            any_report().prop_map(Control::Report),
        ]
    }

    proptest! {
        #[test]
        fn any_frames_round_trip_through_any_chunking(
            frames in prop::collection::vec(any_frame(), 0..6),
            chunk_sizes in prop::collection::vec(1usize..40, 1..8),
        ) {
            let wire = encode(&frames);
            let decoded = testing::decode_chunked(ControlCodec::default(), &wire, &chunk_sizes)
                .expect("valid stream");
            prop_assert_eq!(decoded, frames);
        }

        #[test]
        fn the_decoder_never_panics_on_garbage(
            bytes in prop::collection::vec(any::<u8>(), 0..300),
            chunk_sizes in prop::collection::vec(1usize..32, 1..8),
        ) {
            let _ = testing::decode_chunked(ControlCodec::default(), &bytes, &chunk_sizes);
        }

        #[test]
        fn bodies_of_a_known_kind_never_panic(
            kind in prop::sample::select(vec![1u8, 2, 0x11, 0x12, 0x13]),
            body in prop::collection::vec(any::<u8>(), 0..200),
        ) {
            let mut wire = vec![kind];
            wire.extend_from_slice(&(body.len() as u16).to_be_bytes());
            wire.extend_from_slice(&body);
            let _ = decode_one(&wire);
        }

        #[test]
        fn datagrams_round_trip(id in any::<u64>(), seq in any::<u32>(),
                               payload in prop::collection::vec(any::<u8>(), 0..100)) {
            let header = DatagramHeader { id, seq };
            let datagram = encode_datagram(header, &payload);
            prop_assert_eq!(decode_datagram(&datagram), Ok((header, &payload[..])));
        }

        #[test]
        fn datagram_decoding_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..40)) {
            let _ = decode_datagram(&bytes);
        }

        #[test]
        fn spans_tile_the_file(size in 0u64..100_000, payload in 1usize..5000) {
            let count = datagram_count(size, payload).expect("small");
            let mut next = 0;
            for seq in 0..count {
                let (offset, len) = datagram_span(seq, size, payload).expect("in range");
                prop_assert_eq!(offset, next);
                prop_assert!(len >= 1 && len <= payload);
                next = offset + len as u64;
            }
            prop_assert_eq!(next, size);
            prop_assert_eq!(datagram_span(count, size, payload), None);
        }
    }
}
