//! Splitting a TCP byte stream into JSON values, and the record server's two codecs on top of it.
//!
//! The seed's peers put JSON values on the stream with no delimiter, with or without whitespace
//! between them, and a read may hold half a value or several. [`ValueSplitter`] finds where each
//! top-level object or array ends by tracking nesting, strings and escapes, in a single pass over
//! each byte however the value is cut into reads, and refuses a value longer than its bound before
//! buffering more of it. Bytes that cannot start a value are handed out as garbage, so the server
//! can answer them the way the seed does and carry on with the next value.

use bytes::{Buf, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::{DEFAULT_MAX_MESSAGE_BYTES, RecordError, Request, Response};

/// A piece cut from the stream.
#[derive(Debug, PartialEq, Eq)]
enum Piece {
    /// The bytes of one complete top-level object or array (not yet known to be valid JSON).
    Value(BytesMut),
    /// Bytes that cannot begin a value, up to the next `{` or `[` (where the next value may
    /// begin, however the stream is cut into reads).
    Garbage(BytesMut),
}

/// Incremental scanner for back-to-back JSON values; its state survives between reads.
#[derive(Debug, Clone)]
struct ValueSplitter {
    max_len: usize,
    /// Whether the bytes at the front of the buffer are a value in progress.
    in_value: bool,
    /// How many bytes of the value in progress were already scanned.
    scanned: usize,
    depth: usize,
    in_string: bool,
    escaped: bool,
}

impl ValueSplitter {
    fn new(max_len: usize) -> Self {
        ValueSplitter {
            max_len,
            in_value: false,
            scanned: 0,
            depth: 0,
            in_string: false,
            escaped: false,
        }
    }

    fn next_piece(&mut self, src: &mut BytesMut) -> Result<Option<Piece>, RecordError> {
        if !self.in_value {
            let blank = src.iter().take_while(|b| b.is_ascii_whitespace()).count();
            src.advance(blank);
            match src.first() {
                None => return Ok(None),
                Some(b'{' | b'[') => self.in_value = true,
                Some(_) => {
                    let end = src
                        .iter()
                        .position(|&b| matches!(b, b'{' | b'['))
                        .unwrap_or(src.len());
                    return Ok(Some(Piece::Garbage(src.split_to(end))));
                }
            }
        }
        match self.scan(src) {
            Some(len) if len <= self.max_len => {
                *self = ValueSplitter::new(self.max_len);
                Ok(Some(Piece::Value(src.split_to(len))))
            }
            Some(_) => Err(self.too_large()),
            None if src.len() > self.max_len => Err(self.too_large()),
            None => Ok(None),
        }
    }

    /// Scans the bytes not seen yet; the length of the value if it ends in `src`.
    fn scan(&mut self, src: &[u8]) -> Option<usize> {
        let start = self.scanned;
        self.scanned = src.len();
        for (at, &byte) in src.iter().enumerate().skip(start) {
            if self.in_string {
                match byte {
                    _ if self.escaped => self.escaped = false,
                    b'\\' => self.escaped = true,
                    b'"' => self.in_string = false,
                    _ => {}
                }
                continue;
            }
            match byte {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    self.depth -= 1;
                    if self.depth == 0 {
                        return Some(at + 1);
                    }
                }
                _ => {}
            }
        }
        None
    }

    fn too_large(&self) -> RecordError {
        RecordError::TooLarge {
            limit: self.max_len,
        }
    }
}

/// Parses a value cut by the splitter as a message. Messages are JSON objects; serde would also
/// read a struct from an array of its fields, which no peer of ours sends.
fn parse_object<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    if bytes.first() != Some(&b'{') {
        return Err("a JSON array where an object was expected".into());
    }
    serde_json::from_slice(bytes).map_err(|err| err.to_string())
}

/// A piece of the stream that is not a request: the server answers it with
/// [`Response::invalid_format`] and reads on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRequest {
    /// What was wrong, for the log.
    pub reason: String,
}

/// The server's codec: decodes requests (or [`BadRequest`]s) and encodes responses.
///
/// A value longer than the bound is [`RecordError::TooLarge`]: the stream cannot be resynchronised
/// without reading the whole value, so the server answers and closes.
#[derive(Debug, Clone)]
pub struct ServerCodec {
    splitter: ValueSplitter,
}

impl ServerCodec {
    /// A codec refusing requests longer than `max_request_bytes`.
    pub fn new(max_request_bytes: usize) -> Self {
        ServerCodec {
            splitter: ValueSplitter::new(max_request_bytes),
        }
    }
}

impl Default for ServerCodec {
    fn default() -> Self {
        ServerCodec::new(DEFAULT_MAX_MESSAGE_BYTES)
    }
}

impl Decoder for ServerCodec {
    type Item = Result<Request, BadRequest>;
    type Error = RecordError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, RecordError> {
        let request = match self.splitter.next_piece(src)? {
            None => return Ok(None),
            Some(Piece::Value(bytes)) => parse_object(&bytes).map_err(|reason| BadRequest {
                reason: format!("not a request: {reason}"),
            }),
            Some(Piece::Garbage(bytes)) => Err(BadRequest {
                reason: format!("{} bytes that are not JSON", bytes.len()),
            }),
        };
        Ok(Some(request))
    }
}

impl Encoder<&Response> for ServerCodec {
    type Error = RecordError;

    fn encode(&mut self, response: &Response, dst: &mut BytesMut) -> Result<(), RecordError> {
        response.encode(dst)
    }
}

impl Encoder<Response> for ServerCodec {
    type Error = RecordError;

    fn encode(&mut self, response: Response, dst: &mut BytesMut) -> Result<(), RecordError> {
        response.encode(dst)
    }
}

/// The client's codec: decodes responses and encodes requests. Anything from the server that is
/// not a response is an error.
#[derive(Debug, Clone)]
pub struct ClientCodec {
    splitter: ValueSplitter,
}

impl ClientCodec {
    /// A codec refusing responses longer than `max_response_bytes`.
    pub fn new(max_response_bytes: usize) -> Self {
        ClientCodec {
            splitter: ValueSplitter::new(max_response_bytes),
        }
    }
}

impl Default for ClientCodec {
    fn default() -> Self {
        // A response carries a whole record plus JSON escaping (up to six bytes per character).
        ClientCodec::new(8 * DEFAULT_MAX_MESSAGE_BYTES)
    }
}

impl Decoder for ClientCodec {
    type Item = Response;
    type Error = RecordError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Response>, RecordError> {
        match self.splitter.next_piece(src)? {
            None => Ok(None),
            Some(Piece::Value(bytes)) => parse_object(&bytes)
                .map(Some)
                .map_err(RecordError::MalformedResponse),
            Some(Piece::Garbage(bytes)) => Err(RecordError::MalformedResponse(format!(
                "unexpected bytes {:?}",
                bytes.escape_ascii().to_string()
            ))),
        }
    }
}

impl Encoder<&Request> for ClientCodec {
    type Error = RecordError;

    fn encode(&mut self, request: &Request, dst: &mut BytesMut) -> Result<(), RecordError> {
        dst.extend_from_slice(&request.to_bytes()?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::{RequestKind, RequestType};
    use super::*;
    use crate::testing;
    use proptest::prelude::*;

    /// What the seed's client sends for a write: `json.dumps` of its dict, `client_ID` key,
    /// non-ASCII escaped (computed with Python 3.11).
    const SEED_WRITE: &[u8] = br#"{"client_ID": "150210710", "type": 1, "data": "Last updated: 2024-03-18 13:14:33\nStudent ID: 150210710\nName: Fatih Bask\u0131n\nDate of Birth: 23/11/2000\nCity: Tekirda\u011f\nReason: I want to learn about how Internet and WEB works in general and its details"}"#;
    const SEED_READ: &[u8] = br#"{"client_ID": "150210710", "type": 2, "data": ""}"#;

    fn seed_write_request() -> Request {
        Request::new(
            "150210710",
            RequestKind::Write,
            "Last updated: 2024-03-18 13:14:33\nStudent ID: 150210710\nName: Fatih Baskın\n\
             Date of Birth: 23/11/2000\nCity: Tekirdağ\nReason: I want to learn about how \
             Internet and WEB works in general and its details",
        )
    }

    fn decode(bytes: &[u8]) -> Vec<Result<Request, BadRequest>> {
        testing::decode_chunked(ServerCodec::default(), bytes, &[bytes.len()]).unwrap()
    }

    #[test]
    fn decodes_the_seed_clients_json_dumps_output() {
        let decoded = decode(SEED_WRITE);
        assert_eq!(decoded, vec![Ok(seed_write_request())]);
    }

    #[test]
    fn back_to_back_requests_split_at_every_byte_decode_the_same() {
        let stream = [SEED_WRITE, b" \n", SEED_READ, SEED_READ].concat();
        let expected = vec![
            Ok(seed_write_request()),
            Ok(Request::new("150210710", RequestKind::Read, "")),
            Ok(Request::new("150210710", RequestKind::Read, "")),
        ];
        testing::assert_decodes_at_every_split(ServerCodec::default, &stream, &expected);
    }

    #[test]
    fn braces_and_quotes_inside_strings_do_not_end_a_value() {
        let text = br#"{"client_id": "a", "type": 1, "data": "}{ \" \\\" ]["}{"client_id": "b", "type": 2}"#;
        let decoded = decode(text);
        assert_eq!(decoded.len(), 2);
        assert_eq!(decoded[0].as_ref().unwrap().data, r#"}{ " \" ]["#);
        assert_eq!(decoded[1].as_ref().unwrap().client_id, "b");
    }

    #[test]
    fn garbage_is_reported_and_the_next_request_still_decodes() {
        let decoded = decode(b"hello {\"client_id\": \"1\", \"type\": 2}");
        assert_eq!(decoded.len(), 2);
        assert!(decoded[0].is_err());
        assert_eq!(decoded[1].as_ref().unwrap().client_id, "1");
    }

    #[test]
    fn json_that_is_not_a_request_is_a_bad_request() {
        for text in [
            &b"{not json}"[..],
            b"[1, 2]",
            b"{\"type\": 1}",
            b"{\"client_id\": \"\xff\", \"type\": 1}",
        ] {
            let decoded = decode(text);
            assert!(
                matches!(&decoded[..], [Err(_)]),
                "{text:?} gave {decoded:?}"
            );
        }
    }

    #[test]
    fn garbage_ends_where_an_array_may_begin_however_the_stream_is_cut() {
        // Found by the fuzzer (fuzz/regressions/record_stream/): garbage used to run on to the
        // next `{` only, so an `[` inside it began a value only when a read ended just before
        // it, and whether the server waited for more then depended on the cut.
        let stream = br#"x[{"client_id": "1", "type": 2}]"#;
        for chunk_sizes in [&[stream.len()][..], &[1], &[1, stream.len()]] {
            let decoded =
                testing::decode_chunked(ServerCodec::default(), stream, chunk_sizes).unwrap();
            assert!(
                matches!(&decoded[..], [Err(_), Err(_)]),
                "{chunk_sizes:?} gave {decoded:?}"
            );
        }
        for chunk_sizes in [&[2][..], &[1]] {
            let result = testing::decode_chunked(ServerCodec::default(), b"x[", chunk_sizes);
            assert!(
                matches!(result, Err(RecordError::Io(_))),
                "an unfinished array at the end: {chunk_sizes:?} gave {result:?}"
            );
        }
    }

    #[test]
    fn unknown_type_is_a_request_not_garbage() {
        let decoded = decode(br#"{"client_id": "1", "type": 9, "data": ""}"#);
        assert_eq!(
            decoded[0].as_ref().unwrap().request_type,
            RequestType::Unknown(9.into())
        );
    }

    #[test]
    fn oversize_is_refused_before_the_value_ends() {
        let mut codec = ServerCodec::new(100);
        let mut buf = BytesMut::from(&b"{\"client_id\": \""[..]);
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        buf.extend_from_slice(&[b'a'; 100]);
        let err = codec.decode(&mut buf).unwrap_err();
        assert!(matches!(err, RecordError::TooLarge { limit: 100 }));
        assert!(err.to_string().contains("100 bytes"), "{err}");
    }

    #[test]
    fn a_value_of_exactly_the_limit_is_accepted() {
        let request = br#"{"client_id": "1", "type": 2}"#;
        let mut codec = ServerCodec::new(request.len());
        let mut buf = BytesMut::from(&request[..]);
        assert!(matches!(codec.decode(&mut buf), Ok(Some(Ok(_)))));
        let mut codec = ServerCodec::new(request.len() - 1);
        let mut buf = BytesMut::from(&request[..]);
        assert!(codec.decode(&mut buf).is_err());
    }

    #[test]
    fn client_codec_decodes_responses_and_refuses_garbage() {
        let mut codec = ClientCodec::default();
        let mut buf = Response::success("1", "ok").to_bytes().unwrap();
        buf.extend_from_slice(&Response::error("1", "no").to_bytes().unwrap());
        assert_eq!(
            codec.decode(&mut buf).unwrap(),
            Some(Response::success("1", "ok"))
        );
        assert_eq!(
            codec.decode(&mut buf).unwrap(),
            Some(Response::error("1", "no"))
        );
        let mut garbage = BytesMut::from(&b"HTTP/1.1 400"[..]);
        assert!(matches!(
            codec.decode(&mut garbage),
            Err(RecordError::MalformedResponse(_))
        ));
    }

    #[test]
    fn client_codec_writes_requests_like_json_dumps() {
        let mut buf = BytesMut::new();
        let request = Request::new("150210710", RequestKind::Read, "");
        ClientCodec::default().encode(&request, &mut buf).unwrap();
        assert_eq!(
            &buf[..],
            br#"{"client_id": "150210710", "type": 2, "data": ""}"#
        );
    }

    fn any_request() -> impl Strategy<Value = Request> {
        let kind = prop_oneof![
            Just(RequestKind::Write),
            Just(RequestKind::Read),
            Just(RequestKind::Info),
            Just(RequestKind::Auth)
        ];
        ("[A-Za-z0-9_-]{1,32}", kind, any::<String>())
            .prop_map(|(id, kind, data)| Request::new(id, kind, data))
    }

    proptest! {
        #[test]
        fn requests_round_trip_through_any_chunking(
            requests in prop::collection::vec(any_request(), 0..8),
            separators in prop::collection::vec("[ \t\r\n]{0,2}", 8),
            chunk_sizes in prop::collection::vec(1usize..64, 1..16),
        ) {
            let mut stream = Vec::new();
            for (request, separator) in requests.iter().zip(&separators) {
                stream.extend(request.to_bytes().unwrap());
                stream.extend(separator.as_bytes());
            }
            let expected: Vec<_> = requests.into_iter().map(Ok).collect();
            let decoded = testing::decode_chunked(ServerCodec::default(), &stream, &chunk_sizes).unwrap();
            prop_assert_eq!(decoded, expected);
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_stay_bounded(
            bytes in prop::collection::vec(any::<u8>(), 0..2000),
        ) {
            let mut codec = ServerCodec::new(256);
            let mut buf = BytesMut::new();
            for chunk in bytes.chunks(37) {
                buf.extend_from_slice(chunk);
                loop {
                    match codec.decode(&mut buf) {
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(RecordError::TooLarge { .. }) => return Ok(()),
                        Err(other) => prop_assert!(false, "unexpected error {other}"),
                    }
                }
                prop_assert!(buf.len() <= 256, "buffered {} bytes", buf.len());
            }
        }
    }
}
