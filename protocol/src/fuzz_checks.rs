//! The properties every decoder of this crate must keep, checked on arbitrary bytes: the one
//! place they are written down, called by the cargo-fuzz targets in `fuzz/` and by the
//! regression test that replays their corpora (`tests/fuzz_regressions.rs`).
//!
//! Each public function takes the fuzzer's bytes, runs one decoder (or a family of them) on
//! them and panics when a property is violated. Beyond "no panic", they check:
//!
//! - a decoded value encodes again and decodes to the same value (byte for byte where the
//!   format has a single encoding);
//! - a stream decoder gives the same frames, and the same error, whether the bytes arrive whole,
//!   one at a time or cut at positions drawn from the bytes themselves;
//! - a decoder consumes only from the front of its buffer, at least one byte per frame, never
//!   holds more than one maximal frame while it waits for more, and never reserves room for
//!   a length it was merely told about past its bound;
//! - `Ok(None)` only for a proper prefix of a frame: the leftover, completed, decodes (or is
//!   refused); the stream's end inside a frame is an error, between frames it is not.
//!
//! Not part of the crate's API: hidden from its docs and only stable as far as the fuzz
//! targets need.

use std::collections::HashSet;
use std::fmt::{Debug, Display};

use bytes::{Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::addressbook::{self, AddressBookCodec};
use crate::chat::{self, ChatCodec, ChatFrame, ChatFrameCodec};
use crate::chat_transfer::{self, Control, ControlCodec, Limits, Transport};
use crate::forum::{Envelope, EnvelopeCodec, ForumError, MAX_ENVELOPE_BYTES};
use crate::p2p::secure::{self, DatagramKind, OpenError, Role, SecureChannel, SessionKey};
use crate::p2p::session::{self, SessionMessage, SessionMessageError};
use crate::p2p::signal::{self, ClientMessage, ServerMessage, SignalError};
use crate::p2p::stream::{CHUNK_HEADER_LEN, ChunkHeader, MAX_TRACKED_CHUNKS, StreamTally};
use crate::record::{BadRequest, ClientCodec, Request, Response, ServerCodec};
use crate::reliable::{self, Connection, Header, HeaderError, PacketType, Sack, SendError};

/// The bound the record codecs are fuzzed with: small, so that oversize values are common.
const RECORD_MAX: usize = 512;
/// The payload bound of the second chat codec fuzzed: small, for the same reason.
const CHAT_SMALL_MAX: usize = 64;
/// Inputs up to this long are also fed one byte at a time.
const BYTEWISE_MAX: usize = 512;

/// The record server's JSON stream, both ways: the server's request decoder and the client's
/// response decoder, each bounded to [`RECORD_MAX`] bytes per value.
pub fn record_stream(data: &[u8]) {
    let requests = check_stream(
        || ServerCodec::new(RECORD_MAX),
        data,
        RECORD_MAX,
        json_completion,
        normalize_requests,
    );
    for request in requests.items.iter().flatten() {
        check_request_round_trip(request);
    }
    let responses = check_stream(
        || ClientCodec::new(RECORD_MAX),
        data,
        RECORD_MAX,
        json_completion,
        <[Response]>::to_vec,
    );
    for response in &responses.items {
        let bytes = response.to_bytes().expect("a decoded response encodes");
        assert_ne!(bytes.len() % crate::record::SEED_READ_CHUNK, 0);
        let again = decode_one(ClientCodec::new(bytes.len()), &bytes);
        assert_eq!(
            &again, response,
            "response changed through encode and decode"
        );
    }
}

/// The forum's envelope, as a datagram's bytes and as a length-prefixed TCP stream.
pub fn forum_envelope(data: &[u8]) {
    match Envelope::from_bytes(data) {
        Ok(envelope) => {
            let bytes = check_envelope_round_trip(&envelope);
            assert!(bytes.len() <= data.len(), "re-encoding grew the envelope");
        }
        Err(ForumError::TooLargeReceived { len, .. }) => {
            assert!(data.len() > MAX_ENVELOPE_BYTES && len == data.len() as u64)
        }
        Err(_) => assert!(data.len() <= MAX_ENVELOPE_BYTES),
    }
    let stream = check_stream(
        EnvelopeCodec::new,
        data,
        4 + MAX_ENVELOPE_BYTES,
        |_| vec![0; 4 + MAX_ENVELOPE_BYTES],
        <[Envelope]>::to_vec,
    );
    for envelope in &stream.items {
        let mut wire = BytesMut::new();
        EnvelopeCodec::new()
            .encode(envelope, &mut wire)
            .expect("a decoded envelope encodes");
        assert_eq!(&decode_one(EnvelopeCodec::new(), &wire), envelope);
    }
}

/// The address book's `!cb` Q/R header and its stream codec.
pub fn addressbook(data: &[u8]) {
    if let Some(&header) = data.first_chunk::<{ addressbook::HEADER_LEN }>() {
        match addressbook::parse_header(header) {
            Ok((kind, len)) => {
                assert!(len <= addressbook::MAX_BODY_LEN);
                assert_eq!(
                    [kind.byte(), len as u8],
                    header,
                    "header does not re-encode"
                );
            }
            Err(err) => assert!(err.is_protocol_violation(), "{err}"),
        }
    }
    let stream = check_stream(
        || AddressBookCodec,
        data,
        addressbook::HEADER_LEN + addressbook::MAX_BODY_LEN,
        |_| vec![0; addressbook::HEADER_LEN + addressbook::MAX_BODY_LEN],
        <[addressbook::Message]>::to_vec,
    );
    for (message, span) in stream.items.iter().zip(stream.spans()) {
        assert_eq!(
            &message.to_bytes()[..],
            span,
            "message does not re-encode exactly"
        );
    }
}

/// The chat room's 10-byte header, the payload codec and the whole-frame codec, each at the
/// default bound and at [`CHAT_SMALL_MAX`].
pub fn chat_header(data: &[u8]) {
    if let Some(header) = data.first_chunk::<{ chat::HEADER_LEN }>() {
        for max in [CHAT_SMALL_MAX, chat::DEFAULT_MAX_PAYLOAD] {
            if let Ok(len) = chat::parse_header(header, max) {
                assert!(len <= max);
                let canonical = chat::encode_header(len).expect("a bounded length fits");
                assert_eq!(chat::parse_header(&canonical, max).ok(), Some(len));
            }
        }
    }
    for max in [CHAT_SMALL_MAX, chat::DEFAULT_MAX_PAYLOAD] {
        check_chat_stream(data, max);
    }
}

/// The reliable-datagram layer's 60-byte packet header.
pub fn reliable_header(data: &[u8]) {
    let peeked = Header::peek_connection_id(data);
    match Header::decode(data) {
        Ok((header, payload)) => {
            assert_eq!(header.to_bytes()[..], data[..reliable::HEADER_LEN]);
            assert_eq!(payload, &data[reliable::HEADER_LEN..]);
            assert_eq!(peeked, Some(header.connection_id));
            assert!(header.packet_type == PacketType::Data || payload.is_empty());
            assert_eq!(
                Connection::is_hello(data),
                header.packet_type == PacketType::Hello && header.packet_number == 0
            );
            let sack = header.sack;
            assert_eq!(Sack::from_be_bytes(sack.to_be_bytes()), sack);
            assert!(sack.ones().all(|bit| sack.contains(bit)));
            assert_eq!(sack.highest(), sack.ones().last());
        }
        Err(HeaderError::Truncated(len)) => {
            assert!(len == data.len() && len < reliable::HEADER_LEN && peeked.is_none())
        }
        Err(HeaderError::BadMagic | HeaderError::BadVersion(_)) => assert_eq!(peeked, None),
        Err(_) => assert!(!Connection::is_hello(data)),
    }
}

/// The signaling server's JSON messages, both directions.
pub fn signal(data: &[u8]) {
    check_signal::<ClientMessage>(data);
    check_signal::<ServerMessage>(data);
}

/// The sealed datagrams between peers: a script of seals by the peer and opens (of genuine,
/// replayed, tampered, truncated, reflected, foreign-keyed and made-up datagrams), each open
/// checked against a model of the replay window.
pub fn p2p_secure(data: &[u8]) {
    SecureScript::new(data).run(&mut Input::new(data));
}

/// The messages of a peer-to-peer session.
pub fn p2p_session(data: &[u8]) {
    let message = match SessionMessage::decode(Bytes::copy_from_slice(data)) {
        Ok(message) => message,
        Err(SessionMessageError::UnknownType(byte)) => {
            assert!(!(1..=8).contains(&byte) && data.first() == Some(&byte));
            return;
        }
        Err(_) => return,
    };
    assert_eq!(
        message.encode(),
        data,
        "a session message does not re-encode exactly"
    );
    assert!(session::KINDS.contains(&message.kind()));
    check_session_bounds(&message);
}

/// The media stream's chunk header, and the receiver's tally of chunks checked against a model.
pub fn p2p_stream(data: &[u8]) {
    match ChunkHeader::decode(data) {
        Ok((header, payload)) => {
            let mut bytes = Vec::new();
            header.encode(&mut bytes);
            bytes.extend_from_slice(payload);
            assert_eq!(bytes, data, "a chunk header does not re-encode exactly");
        }
        Err(err) => assert!(data.len() < CHUNK_HEADER_LEN, "{err}"),
    }
    check_tally(&mut Input::new(data));
}

/// The chat file transfer: control frames on the TCP connection and data datagrams.
pub fn chat_transfer(data: &[u8]) {
    check_data_datagram(data);
    let stream = check_stream(
        ControlCodec::default,
        data,
        chat_transfer::CONTROL_HEADER_LEN + chat_transfer::MAX_CONTROL_BODY,
        |_| vec![0; chat_transfer::CONTROL_HEADER_LEN + chat_transfer::MAX_CONTROL_BODY],
        <[Control]>::to_vec,
    );
    for (frame, span) in stream.items.iter().zip(stream.spans()) {
        let mut wire = BytesMut::new();
        ControlCodec::default()
            .encode(frame, &mut wire)
            .expect("a decoded control frame encodes");
        assert_eq!(
            &wire[..],
            span,
            "a control frame does not re-encode exactly"
        );
        if let Control::Announce(announce) = frame {
            check_announce(announce);
        }
    }
}

/// The reliable-datagram state machine (server end) fed a script of crafted and raw datagrams,
/// timer expiries, sends and reads: everything it transmits is a well-formed packet of its
/// connection within the datagram size, and its buffers and deliveries stay within bounds.
pub fn reliable_connection(data: &[u8]) {
    ConnectionScript::run(&mut Input::new(data));
}

// ---------------------------------------------------------------------------------------------
// Reading the fuzzer's bytes.

/// The fuzzer's bytes, read from the front; reads past the end give zeros.
struct Input<'a> {
    rest: &'a [u8],
}

impl<'a> Input<'a> {
    fn new(data: &'a [u8]) -> Input<'a> {
        Input { rest: data }
    }

    /// The next byte, `None` at the end.
    fn next(&mut self) -> Option<u8> {
        let (&first, rest) = self.rest.split_first()?;
        self.rest = rest;
        Some(first)
    }

    fn byte(&mut self) -> u8 {
        self.next().unwrap_or(0)
    }

    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.byte(), self.byte()])
    }

    fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }

    /// Up to `n` bytes.
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, tail) = self.rest.split_at(n.min(self.rest.len()));
        self.rest = tail;
        head
    }
}

/// FNV-1a of `data`: where to cut the stream, drawn from the bytes themselves.
fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

// ---------------------------------------------------------------------------------------------
// Stream decoders.

/// What a decoder made of a byte stream.
struct Decoded<'a, T> {
    input: &'a [u8],
    items: Vec<T>,
    /// Bytes each item consumed, in order.
    consumed: Vec<usize>,
    /// The error that stopped decoding, if one did (before or at the end of the stream).
    error: Option<Failure>,
    /// Bytes still buffered when the stream ended (empty after an error).
    leftover: Vec<u8>,
}

impl<T> Decoded<'_, T> {
    /// The bytes each item was decoded from.
    fn spans(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let mut at = 0;
        self.consumed.iter().map(move |&len| {
            let span = &self.input[at..at + len];
            at += len;
            span
        })
    }
}

/// Feeds `input` to `codec` in pieces ending at `cuts` (then the rest), decoding after each,
/// then signals the end of the stream, checking every call on the way.
fn feed<'a, D>(mut codec: D, input: &'a [u8], cuts: &[usize], bound: usize) -> Decoded<'a, D::Item>
where
    D: Decoder,
    D::Error: Debug + Display,
{
    let mut out = Decoded {
        input,
        items: Vec::new(),
        consumed: Vec::new(),
        error: None,
        leftover: Vec::new(),
    };
    let mut buf = BytesMut::new();
    let mut fed = 0;
    for end in cuts.iter().copied().chain([input.len()]) {
        let end = end.clamp(fed, input.len());
        buf.extend_from_slice(&input[fed..end]);
        fed = end;
        if let Err(err) = decode_available(&mut codec, &mut buf, fed, bound, &mut out) {
            out.error = Some(Failure::new(&err, false));
            return out;
        }
        assert_eq!(
            buf[..],
            input[fed - buf.len()..fed],
            "the buffer is not the unread input"
        );
    }
    out.leftover = buf.to_vec();
    finish_stream(&mut codec, &mut buf, &mut out);
    out
}

/// An error that stopped decoding: which variant, and whether it came at the end of the
/// stream (compared across cuts), and its text (which may quote bytes that depend on the cuts).
struct Failure {
    variant: String,
    at_end: bool,
    text: String,
}

impl Failure {
    fn new<E: Debug + Display>(err: &E, at_end: bool) -> Failure {
        let debug = format!("{err:?}");
        let variant = debug.split([' ', '(', '{']).next().unwrap_or_default();
        Failure {
            variant: variant.to_owned(),
            at_end,
            text: err.to_string(),
        }
    }

    /// What must not depend on the cuts.
    fn kind(&self) -> (&str, bool) {
        (&self.variant, self.at_end)
    }
}

/// Decodes every frame in `buf`, checking each call; the error that stopped it, if one did.
fn decode_available<D>(
    codec: &mut D,
    buf: &mut BytesMut,
    fed: usize,
    bound: usize,
    out: &mut Decoded<'_, D::Item>,
) -> Result<(), D::Error>
where
    D: Decoder,
    D::Error: Debug + Display,
{
    loop {
        let before = buf.len();
        let result = codec.decode(buf);
        assert!(buf.len() <= before, "the decoder added bytes to its buffer");
        assert!(
            buf.capacity() <= 4 * (fed + bound) + 1024,
            "the decoder reserved {} bytes for {fed} bytes of input",
            buf.capacity()
        );
        match result? {
            Some(item) => {
                assert!(buf.len() < before, "a frame was decoded from no bytes");
                out.items.push(item);
                out.consumed.push(before - buf.len());
            }
            None => {
                assert!(
                    buf.len() <= bound,
                    "waiting for more with {} bytes",
                    buf.len()
                );
                return Ok(());
            }
        }
    }
}

/// Signals the end of the stream: nothing more may decode, and it is an error exactly when
/// part of a frame is left.
fn finish_stream<D>(codec: &mut D, buf: &mut BytesMut, out: &mut Decoded<'_, D::Item>)
where
    D: Decoder,
    D::Error: Debug + Display,
{
    match codec.decode_eof(buf) {
        Ok(None) => assert!(out.leftover.is_empty(), "the stream ended inside a frame"),
        Ok(Some(_)) => panic!("a frame decoded at the end that did not decode before it"),
        Err(err) => {
            assert!(!out.leftover.is_empty(), "an error at a clean end: {err}");
            out.error = Some(Failure::new(&err, true));
        }
    }
}

/// Runs the stream checks common to every stream decoder: the same frames (as `normalize`
/// sees them) and the same error whole, cut at positions drawn from `input`, and one byte at
/// a time; and a leftover that is a proper prefix (a fresh decoder waits on it, and it decodes
/// or fails once `complete` adds to it). The whole run, for the caller's own checks.
fn check_stream<D, N>(
    new_codec: impl Fn() -> D,
    input: &[u8],
    bound: usize,
    complete: impl Fn(&[u8]) -> Vec<u8>,
    normalize: impl Fn(&[D::Item]) -> Vec<N>,
) -> Decoded<'_, D::Item>
where
    D: Decoder,
    D::Error: Debug + Display,
    N: PartialEq + Debug,
{
    let whole = feed(new_codec(), input, &[], bound);
    let hash = fnv(input);
    let len = input.len() as u64 + 1;
    let mut cuts = [(hash % len) as usize, ((hash >> 32) % len) as usize];
    cuts.sort_unstable();
    let mut runs = vec![feed(new_codec(), input, &cuts, bound)];
    if input.len() <= BYTEWISE_MAX {
        let every: Vec<usize> = (1..input.len()).collect();
        runs.push(feed(new_codec(), input, &every, bound));
    }
    let expected = normalize(&whole.items);
    for run in &runs {
        assert_eq!(normalize(&run.items), expected, "frames depend on the cuts");
        assert_eq!(
            run.error.as_ref().map(Failure::kind),
            whole.error.as_ref().map(Failure::kind),
            "the error depends on the cuts: {:?} whole, {:?} cut",
            whole.error.as_ref().map(|failure| &failure.text),
            run.error.as_ref().map(|failure| &failure.text),
        );
    }
    if whole.error.is_none() && !whole.leftover.is_empty() {
        check_proper_prefix(&new_codec, &whole.leftover, complete);
    }
    whole
}

/// `leftover`, on which a decoder waited, is the start of a frame: a fresh decoder waits on it
/// too, and once completed it gives a frame or an error.
fn check_proper_prefix<D>(
    new_codec: impl Fn() -> D,
    leftover: &[u8],
    complete: impl Fn(&[u8]) -> Vec<u8>,
) where
    D: Decoder,
    D::Error: Debug + Display,
{
    let mut buf = BytesMut::from(leftover);
    assert!(
        matches!(new_codec().decode(&mut buf), Ok(None)),
        "a fresh decoder does not wait on the leftover"
    );
    let mut buf = BytesMut::from(leftover);
    buf.extend_from_slice(&complete(leftover));
    assert!(
        !matches!(new_codec().decode(&mut buf), Ok(None)),
        "the leftover is no prefix of a frame"
    );
}

/// Decodes the single frame `wire` holds.
fn decode_one<D>(mut codec: D, wire: &[u8]) -> D::Item
where
    D: Decoder,
    D::Error: Debug,
{
    let mut buf = BytesMut::from(wire);
    let item = codec
        .decode(&mut buf)
        .expect("decodes")
        .expect("a whole frame");
    assert!(
        buf.iter().all(u8::is_ascii_whitespace),
        "bytes left after the frame"
    );
    item
}

// ---------------------------------------------------------------------------------------------
// The record server.

/// How a request stream is compared across cuts: requests as they are, and each run of
/// unusable pieces as one (the stream's garbage is cut where the reads end).
#[derive(Debug, PartialEq)]
enum RecordPiece {
    Request(Request),
    Bad,
}

fn normalize_requests(items: &[Result<Request, BadRequest>]) -> Vec<RecordPiece> {
    let mut pieces = Vec::new();
    for item in items {
        match item {
            Ok(request) => pieces.push(RecordPiece::Request(request.clone())),
            Err(_) if pieces.last() == Some(&RecordPiece::Bad) => {}
            Err(_) => pieces.push(RecordPiece::Bad),
        }
    }
    pieces
}

/// Bytes that end the JSON value `prefix` begins: close the string (finishing an escape),
/// then every open object or array.
fn json_completion(prefix: &[u8]) -> Vec<u8> {
    let (mut in_string, mut escaped) = (false, false);
    let mut open = Vec::new();
    for &byte in prefix {
        match byte {
            _ if escaped => escaped = false,
            b'\\' if in_string => escaped = true,
            b'"' => in_string = !in_string,
            _ if in_string => {}
            b'{' => open.push(b'}'),
            b'[' => open.push(b']'),
            b'}' | b']' => {
                open.pop();
            }
            _ => {}
        }
    }
    let mut end = Vec::new();
    if escaped {
        end.push(b'n');
    }
    if in_string {
        end.push(b'"');
    }
    end.extend(open.iter().rev());
    end
}

/// A request encodes as `json.dumps` would and decodes to the same request. An unknown type
/// is compared as unknown only: its JSON value may hold a float, which serde_json does not
/// promise to read back to the same bits.
fn check_request_round_trip(request: &Request) {
    let bytes = request.to_bytes().expect("a decoded request encodes");
    let again = decode_one(ServerCodec::new(bytes.len()), &bytes).expect("a request again");
    assert_eq!(
        (&again.client_id, &again.data, again.kind()),
        (&request.client_id, &request.data, request.kind()),
        "request changed through encode and decode"
    );
}

// ---------------------------------------------------------------------------------------------
// The forum, the chat room, the address book.

/// Encodes `envelope` (within the limit) and checks it decodes to itself; the bytes.
fn check_envelope_round_trip(envelope: &Envelope) -> Vec<u8> {
    let bytes = envelope.to_bytes().expect("a decoded envelope encodes");
    let again = Envelope::from_bytes(&bytes).expect("an encoded envelope decodes");
    assert_eq!(
        &again, envelope,
        "envelope changed through encode and decode"
    );
    bytes
}

/// The chat stream at payload bound `max`: the payload codec and the frame codec agree, frames
/// are kept byte for byte, and each header says its payload's length.
fn check_chat_stream(data: &[u8], max: usize) {
    let bound = chat::HEADER_LEN + max;
    let zeros = |_: &[u8]| vec![0; bound];
    let payloads = check_stream(
        || ChatCodec::new(max),
        data,
        bound,
        zeros,
        <[Bytes]>::to_vec,
    );
    let frames = check_stream(
        || ChatFrameCodec::new(max),
        data,
        bound,
        zeros,
        <[ChatFrame]>::to_vec,
    );
    assert_eq!(payloads.error.is_some(), frames.error.is_some());
    assert_eq!(payloads.items.len(), frames.items.len());
    for ((payload, frame), span) in payloads.items.iter().zip(&frames.items).zip(frames.spans()) {
        assert_eq!(frame.payload(), payload);
        assert_eq!(frame.as_bytes(), span);
        let header = frame.header().try_into().expect("10 bytes");
        assert_eq!(chat::parse_header(header, max).ok(), Some(payload.len()));
        let canonical = ChatFrame::new(payload).expect("a bounded payload frames");
        assert_eq!(
            decode_one(ChatCodec::new(max), canonical.as_bytes()),
            payload
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Signaling.

/// One signaling message type: bounded, and what decodes encodes and decodes to itself.
fn check_signal<M>(data: &[u8])
where
    M: serde::Serialize + serde::de::DeserializeOwned + PartialEq + Debug,
{
    match signal::decode::<M>(data) {
        Ok(message) => {
            let wire = signal::encode(&message);
            let again: M = signal::decode(&wire).expect("an encoded message decodes");
            assert_eq!(again, message, "signal changed through encode and decode");
        }
        Err(SignalError::TooLarge(len)) => {
            assert!(len == data.len() && len > signal::MAX_SIGNAL_PAYLOAD)
        }
        Err(SignalError::Malformed(_)) => assert!(data.len() <= signal::MAX_SIGNAL_PAYLOAD),
    }
}

// ---------------------------------------------------------------------------------------------
// Sealed datagrams.

/// The session of the scripted channels.
const SESSION: u32 = 0x5e55_1011;
/// The direction byte of the datagrams the scripted receiver (the initiator) accepts.
const PEER_DIRECTION: u8 = 1;

/// A datagram the peer sealed, and what it holds.
struct Sealed {
    counter: u64,
    kind: DatagramKind,
    payload: Vec<u8>,
    datagram: Vec<u8>,
}

/// The replay window as the module documents it: a counter opens once, and only while it is
/// ahead of the highest opened or less than the window behind it.
#[derive(Default)]
struct ReplayModel {
    highest: Option<u64>,
    opened: HashSet<u64>,
}

impl ReplayModel {
    fn is_fresh(&self, counter: u64) -> bool {
        self.highest.is_none_or(|highest| {
            counter > highest
                || (highest - counter < secure::REPLAY_WINDOW && !self.opened.contains(&counter))
        })
    }

    fn mark(&mut self, counter: u64) {
        self.opened.insert(counter);
        self.highest = self.highest.max(Some(counter));
    }
}

/// The scripted session: the peer (acceptor) seals, we (initiator) open.
struct SecureScript {
    peer: SecureChannel,
    us: SecureChannel,
    stranger: SecureChannel,
    sent: Vec<Sealed>,
    model: ReplayModel,
    opens: u64,
    opened: u64,
}

impl SecureScript {
    /// The channels of a session whose key is drawn from the whole script. A fixed key would
    /// let the fuzzer replay, as made-up bytes, a datagram sealed in an earlier run (it sees
    /// the bytes compared): one that really does open.
    fn new(data: &[u8]) -> SecureScript {
        let hash = fnv(data);
        let mut key = [0; secure::KEY_LEN];
        for (i, chunk) in key.chunks_exact_mut(8).enumerate() {
            let word = hash.rotate_left(16 * i as u32) ^ i as u64;
            chunk.copy_from_slice(&word.to_be_bytes());
        }
        let mut other = key;
        other[0] ^= 1;
        let (key, other_key) = (SessionKey::from_bytes(key), SessionKey::from_bytes(other));
        SecureScript {
            peer: SecureChannel::new(&key, SESSION, Role::Acceptor),
            us: SecureChannel::new(&key, SESSION, Role::Initiator),
            stranger: SecureChannel::new(&other_key, SESSION, Role::Acceptor),
            sent: Vec::new(),
            model: ReplayModel::default(),
            opens: 0,
            opened: 0,
        }
    }

    fn run(mut self, input: &mut Input<'_>) {
        while let Some(op) = input.next() {
            let kind = if op & 0x80 == 0 {
                DatagramKind::Reliable
            } else {
                DatagramKind::Stream
            };
            match op % 8 {
                0 => {
                    let len = usize::from(input.byte());
                    self.seal(kind, input.take(len));
                }
                1 => (0..Self::bulk(op, input)).for_each(|_| self.seal(kind, &[])),
                2 => self.open_sent(input),
                3 => self.open_tampered(input),
                4 => self.open_truncated(input),
                5 => self.open_reflected(kind),
                6 => self.open_stranger(kind, input),
                _ => {
                    let len = usize::from(input.byte());
                    self.open_made_up(input.take(len));
                }
            }
        }
        let stats = self.us.stats();
        assert_eq!(stats.opened, self.opened);
        assert_eq!(
            stats.foreign + stats.forged + stats.replayed,
            self.opens - self.opened
        );
    }

    /// How many empty datagrams to seal at once: a few, or (rarely, as it is slow) enough to
    /// move the replay window past everything opened so far.
    fn bulk(op: u8, input: &mut Input<'_>) -> u64 {
        let extra = u64::from(input.byte() % 64);
        if op & 0x70 == 0x70 {
            secure::REPLAY_WINDOW + extra - 32
        } else {
            extra % 16
        }
    }

    fn seal(&mut self, kind: DatagramKind, payload: &[u8]) {
        let mut datagram = Vec::new();
        self.peer.seal(kind, payload, &mut datagram);
        assert_eq!(datagram.len(), payload.len() + secure::OVERHEAD);
        assert_eq!(secure::peek_session(&datagram), Some(SESSION));
        self.sent.push(Sealed {
            counter: self.sent.len() as u64,
            kind,
            payload: payload.to_vec(),
            datagram,
        });
    }

    /// Opens `datagram` and checks the outcome against `expected`; the payload if it opened.
    fn open(&mut self, datagram: &[u8], expected: Result<DatagramKind, OpenError>) -> Vec<u8> {
        let mut out = vec![0xAA; 3];
        let result = self.us.open(datagram, &mut out);
        assert_eq!(result, expected, "unexpected outcome of open");
        self.opens += 1;
        if result.is_ok() {
            self.opened += 1;
        } else {
            assert!(out.is_empty(), "a dropped datagram left plaintext behind");
        }
        out
    }

    /// What opening a datagram with this header should give, if its tag verifies.
    fn expect_for(
        &self,
        datagram: &[u8],
        genuine: Option<DatagramKind>,
    ) -> Result<DatagramKind, OpenError> {
        let header_ok = secure::peek_session(datagram) == Some(SESSION)
            && matches!(datagram[2], 1 | 2)
            && datagram[3] == PEER_DIRECTION;
        if !header_ok {
            return Err(OpenError::Foreign);
        }
        let counter = u64::from_be_bytes(datagram[8..16].try_into().expect("8 bytes"));
        if !self.model.is_fresh(counter) {
            return Err(OpenError::Replayed);
        }
        genuine.ok_or(OpenError::Forged)
    }

    fn pick(&self, input: &mut Input<'_>) -> Option<usize> {
        let index = usize::from(input.u16());
        (!self.sent.is_empty()).then(|| index % self.sent.len())
    }

    fn open_sent(&mut self, input: &mut Input<'_>) {
        let Some(index) = self.pick(input) else {
            return;
        };
        let sealed = &self.sent[index];
        let (datagram, counter, payload) = (
            sealed.datagram.clone(),
            sealed.counter,
            sealed.payload.clone(),
        );
        let expected = self.expect_for(&datagram, Some(sealed.kind));
        let out = self.open(&datagram, expected);
        if expected.is_ok() {
            assert_eq!(out, payload, "the payload changed on the way");
            self.model.mark(counter);
        }
    }

    fn open_tampered(&mut self, input: &mut Input<'_>) {
        let Some(index) = self.pick(input) else {
            return;
        };
        let mut datagram = self.sent[index].datagram.clone();
        let at = usize::from(input.u16()) % datagram.len();
        datagram[at] ^= input.byte().max(1);
        let expected = self.expect_for(&datagram, None);
        self.open(&datagram, expected);
    }

    fn open_truncated(&mut self, input: &mut Input<'_>) {
        let Some(index) = self.pick(input) else {
            return;
        };
        let mut datagram = self.sent[index].datagram.clone();
        datagram.truncate(usize::from(input.u16()) % datagram.len());
        let expected = if datagram.len() < secure::OVERHEAD {
            Err(OpenError::Foreign)
        } else {
            self.expect_for(&datagram, None)
        };
        self.open(&datagram, expected);
    }

    fn open_reflected(&mut self, kind: DatagramKind) {
        let mut datagram = Vec::new();
        self.us.seal(kind, b"ours", &mut datagram);
        self.open(&datagram, Err(OpenError::Foreign));
    }

    fn open_stranger(&mut self, kind: DatagramKind, input: &mut Input<'_>) {
        let mut datagram = Vec::new();
        let len = usize::from(input.byte());
        self.stranger.seal(kind, input.take(len), &mut datagram);
        let expected = self.expect_for(&datagram, None);
        self.open(&datagram, expected);
    }

    fn open_made_up(&mut self, datagram: &[u8]) {
        let genuine = self.sent.iter().find(|sealed| sealed.datagram == datagram);
        let expected = match genuine {
            Some(sealed) => self.expect_for(datagram, Some(sealed.kind)),
            None if datagram.len() < secure::OVERHEAD => Err(OpenError::Foreign),
            None => self.expect_for(datagram, None),
        };
        let counter = genuine.map(|sealed| sealed.counter);
        self.open(datagram, expected);
        if let (Ok(_), Some(counter)) = (expected, counter) {
            self.model.mark(counter);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Session messages, stream chunks, chat transfer.

/// A decoded session message is within every bound the module documents.
fn check_session_bounds(message: &SessionMessage) {
    let name_ok = |name: &str| chat_transfer::check_file_name(name).is_ok();
    match message {
        SessionMessage::Chat { text } => assert!(text.len() <= session::MAX_TEXT_BYTES),
        SessionMessage::FileOffer { name, .. } | SessionMessage::StreamStart { name, .. } => {
            assert!(name_ok(name))
        }
        SessionMessage::FileChunk { data, .. } => assert!(data.len() <= session::MAX_CHUNK_BYTES),
        SessionMessage::FileAbort { reason: text, .. }
        | SessionMessage::FileResult { detail: text, .. } => {
            assert!(text.len() <= session::MAX_REASON_BYTES)
        }
        SessionMessage::StreamEnd { .. } | SessionMessage::StreamReport { .. } => {}
    }
}

/// The tally as the module documents it, counted the simple way.
#[derive(Default)]
struct TallyModel {
    seen: HashSet<u32>,
    highest: Option<u32>,
    received: u32,
    duplicates: u32,
    reordered: u32,
    bytes: u64,
}

impl TallyModel {
    fn on_chunk(&mut self, seq: u32, payload_len: usize) {
        if seq < MAX_TRACKED_CHUNKS && !self.seen.insert(seq) {
            self.duplicates += 1;
            return;
        }
        self.received += 1;
        self.bytes += payload_len as u64;
        if self.highest.is_some_and(|highest| seq < highest) {
            self.reordered += 1;
        } else {
            self.highest = Some(seq);
        }
    }
}

/// Feeds chunks described by the input to a tally of stream 1 and to the model.
fn check_tally(input: &mut Input<'_>) {
    const STREAM: u32 = 1;
    let mut tally = StreamTally::new(STREAM);
    let mut model = TallyModel::default();
    let (mut arrived_at_us, mut same_transit) = (0u64, true);
    let mut first_transit = None;
    while let Some(flags) = input.next() {
        let seq = match flags & 3 {
            0 => u32::from(input.byte()),
            1 => MAX_TRACKED_CHUNKS - 2 + u32::from(input.byte() % 4),
            _ => input.u32(),
        };
        let header = ChunkHeader {
            stream_id: if flags & 4 == 0 { STREAM } else { 2 },
            seq,
            sent_at_us: u64::from(input.u32()),
        };
        arrived_at_us += u64::from(input.u16());
        let payload_len = usize::from(input.u16());
        tally.on_chunk(&header, payload_len, arrived_at_us);
        if header.stream_id == STREAM {
            model.on_chunk(seq, payload_len);
            let transit = i128::from(arrived_at_us) - i128::from(header.sent_at_us);
            same_transit &= *first_transit.get_or_insert(transit) == transit;
        }
    }
    let sent = input.u32();
    let report = tally.report(sent);
    let expected = (
        model.received,
        model.duplicates,
        model.reordered,
        model.bytes,
    );
    let got = (
        report.received,
        report.duplicates,
        report.reordered,
        report.bytes,
    );
    assert_eq!(got, expected, "the tally differs from the model");
    assert_eq!(report.lost, sent.saturating_sub(model.received));
    if same_transit {
        assert_eq!(
            report.jitter_us, 0,
            "jitter without any change in transit time"
        );
    }
}

/// A data datagram's header decodes exactly what it encodes.
fn check_data_datagram(data: &[u8]) {
    match chat_transfer::decode_datagram(data) {
        Ok((header, payload)) => {
            assert_eq!(chat_transfer::encode_datagram(header, payload), data);
        }
        Err(chat_transfer::DatagramError::TooShort(len)) => {
            assert!(len == data.len() && len < chat_transfer::DATAGRAM_HEADER_LEN)
        }
        Err(chat_transfer::DatagramError::UnknownKind(kind)) => {
            assert!(data.first() == Some(&kind) && kind != chat_transfer::DATAGRAM_KIND)
        }
    }
}

/// An accepted UDP announce describes datagrams that tile the file exactly.
fn check_announce(announce: &chat_transfer::Announce) {
    let limits = Limits {
        max_file_size: u64::MAX,
        max_datagrams: u32::MAX,
    };
    if announce.check(&limits).is_err() || announce.transport != Transport::Udp {
        return;
    }
    let (size, payload) = (announce.size, usize::from(announce.datagram_payload));
    let count = announce.datagram_count;
    assert_eq!(chat_transfer::datagram_span(count, size, payload), None);
    if count == 0 {
        assert_eq!(size, 0, "no datagrams for a file that is not empty");
        return;
    }
    let (offset, len) = chat_transfer::datagram_span(count - 1, size, payload).expect("last");
    assert!(len >= 1 && len <= payload && offset + len as u64 == size);
    assert_eq!(
        chat_transfer::datagram_span(0, size, payload).map(|s| s.0),
        Some(0)
    );
}

// ---------------------------------------------------------------------------------------------
// The reliable-datagram state machine.

/// The scripted server connection and its bounds.
struct ConnectionScript {
    connection: Connection,
    config: reliable::Config,
    now: std::time::Instant,
    connection_id: u32,
}

impl ConnectionScript {
    fn run(input: &mut Input<'_>) {
        let config = reliable::Config {
            max_datagram_size: 200,
            max_message_size: 2048,
            max_in_flight: 16,
            max_send_queue: 8192,
            max_receive_buffer: 4096,
            ..reliable::Config::default()
        };
        let connection_id = input.u32();
        let now = std::time::Instant::now();
        let hello = Self::packet(connection_id, PacketType::Hello, 0, &[]);
        let connection = Connection::server(&hello, config.clone(), now).expect("a hello opens");
        let mut script = ConnectionScript {
            connection,
            config,
            now,
            connection_id,
        };
        while let Some(op) = input.next() {
            script.step(op, input);
            script.check_transmits();
        }
    }

    /// A packet of the connection with the given type, number and payload, acknowledging
    /// nothing.
    fn packet(connection_id: u32, packet_type: PacketType, number: u32, payload: &[u8]) -> Vec<u8> {
        let data = packet_type == PacketType::Data;
        let header = Header {
            packet_type,
            connection_id,
            packet_number: number,
            ack: 0,
            ack_delay_micros: 0,
            sack: Sack::EMPTY,
            message_id: u32::from(data),
            fragment_index: 0,
            fragment_count: u16::from(data),
        };
        let mut datagram = header.to_bytes().to_vec();
        datagram.extend_from_slice(payload);
        datagram
    }

    fn step(&mut self, op: u8, input: &mut Input<'_>) {
        match op % 6 {
            0 => {
                let datagram = self.crafted(input);
                self.connection.handle_datagram(self.now, &datagram);
            }
            1 => {
                let len = usize::from(input.byte());
                let raw = input.take(len).to_vec();
                self.connection
                    .handle_datagram_bytes(self.now, Bytes::from(raw));
            }
            2 => {
                self.now += std::time::Duration::from_micros(u64::from(input.u16()) * 50);
                self.connection.handle_timeout(self.now);
            }
            3 => self.receive_all(),
            4 => {
                let len = usize::from(input.u16()) % (self.config.max_message_size + 64);
                let sent = self.connection.send(Bytes::from(vec![op; len]));
                if len > self.config.max_message_size {
                    assert!(
                        matches!(sent, Err(SendError::TooLarge { .. } | SendError::Closed)),
                        "an oversize message was queued: {sent:?}"
                    );
                }
            }
            _ => self.connection.close(),
        }
        let bound = self
            .config
            .max_receive_buffer
            .max(self.config.max_message_size);
        assert!(
            self.connection.buffered_bytes() <= bound,
            "receive buffer past its bound"
        );
        let bound = self.config.max_send_queue.max(self.config.max_message_size);
        assert!(
            self.connection.unacknowledged_bytes() <= bound,
            "send queue past its bound"
        );
    }

    /// A datagram of this connection whose header fields come from the input.
    fn crafted(&self, input: &mut Input<'_>) -> Vec<u8> {
        let code = 1 + input.byte() % 5;
        let mut sack = [0; 32];
        sack[24..].iter_mut().for_each(|byte| *byte = input.byte());
        let header = Header {
            packet_type: PacketType::from_code(code).expect("1 to 5"),
            connection_id: self.connection_id,
            packet_number: u32::from(input.u16()),
            ack: u32::from(input.byte()),
            ack_delay_micros: input.u32(),
            sack: Sack::from_be_bytes(sack),
            message_id: u32::from(input.byte()),
            fragment_index: u16::from(input.byte()),
            fragment_count: u16::from(input.byte()),
        };
        let mut datagram = header.to_bytes().to_vec();
        let len = usize::from(input.byte());
        datagram.extend_from_slice(input.take(len));
        datagram
    }

    fn receive_all(&mut self) {
        while let Some(message) = self.connection.recv() {
            assert!(
                message.len() <= self.config.max_message_size,
                "message past its bound"
            );
        }
        while self.connection.poll_event().is_some() {}
    }

    /// Everything the connection sends now is a packet of its own within the datagram size.
    fn check_transmits(&mut self) {
        for _ in 0..10_000 {
            let Some(datagram) = self.connection.poll_transmit(self.now) else {
                return;
            };
            assert!(
                datagram.len() <= self.config.max_datagram_size,
                "datagram too large"
            );
            let (header, _) = Header::decode(&datagram).expect("we send well-formed packets");
            assert_eq!(header.connection_id, self.connection_id);
        }
        panic!("poll_transmit never runs dry");
    }
}
