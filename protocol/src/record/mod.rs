//! The record server's messages (seed 000): UTF-8 JSON objects over TCP with no delimiter.
//!
//! Request: `{"client_id": "<id>", "type": <int>, "data": "<string>"}`. The seed's client spells
//! the key `client_ID`; both spellings are accepted. Types: 1 write, 2 read, 3 info, 4 auth.
//!
//! Response: `{"client_id": "<id>", "type": <int>, "data": "<string>"}`, types 1 success, 2 error,
//! 3 info, written exactly as Python's `json.dumps` writes it ([`to_python_json`]).
//!
//! Two facts of the seed's client shape the encoding:
//! - requests may arrive back to back in one read, or one request across many reads, so the server
//!   splits the byte stream into JSON values itself ([`ServerCodec`]), bounded in size;
//! - the client reads a response in 1024-byte chunks until a chunk comes back shorter, so a response
//!   whose length is a multiple of 1024 would hang it: [`Response::encode`] appends one newline to
//!   such a response (trailing whitespace is still valid JSON).

mod pyjson;
mod request;
mod stream;

pub use pyjson::{PythonFormatter, to_python_json};
pub use request::{Request, RequestKind, RequestType};
pub use stream::{BadRequest, ClientCodec, ServerCodec};

use bytes::{BufMut, BytesMut};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

/// The default bound on one request or response, in bytes (the server's `MAX_MESSAGE_BYTES`).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// The chunk size the seed's client reads responses with.
pub const SEED_READ_CHUNK: usize = 1024;

/// The seed's answer to a successful write.
pub const WRITE_OK: &str = "File updated successfully.";
/// The seed's answer to a read of an id that has no record.
pub const READ_MISS: &str = "Error reading file.";
/// The seed's answer to bytes that are not a JSON request.
pub const INVALID_FORMAT: &str = "Invalid request format, please send a valid JSON request.";
/// The seed's answer to a request whose type it does not know.
pub const INVALID_TYPE: &str = "Invalid request type, please send a valid request type.";
/// The `client_id` the seed puts in a response to a request it could not parse.
pub const UNKNOWN_CLIENT_ID: &str = "None";

/// Everything that can go wrong reading or writing record messages.
#[derive(Debug, Error)]
pub enum RecordError {
    /// The peer sent a JSON value longer than the configured bound.
    #[error("message exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The bound that was exceeded, in bytes.
        limit: usize,
    },
    /// The server sent something that is not a response.
    #[error("malformed response from the server: {0}")]
    MalformedResponse(String),
    /// Local misuse: a message that cannot be serialized.
    #[error("cannot encode the message: {0}")]
    Encode(#[from] serde_json::Error),
    /// The transport failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// What a response says about its request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResponseKind {
    /// 1: the request was carried out.
    Success,
    /// 2: the request failed; `data` says why.
    Error,
    /// 3: server information.
    Info,
}

impl ResponseKind {
    /// The number on the wire.
    pub const fn code(self) -> u8 {
        match self {
            ResponseKind::Success => 1,
            ResponseKind::Error => 2,
            ResponseKind::Info => 3,
        }
    }

    /// The kind a wire number stands for, if any.
    pub const fn from_code(code: i64) -> Option<ResponseKind> {
        match code {
            1 => Some(ResponseKind::Success),
            2 => Some(ResponseKind::Error),
            3 => Some(ResponseKind::Info),
            _ => None,
        }
    }
}

impl Serialize for ResponseKind {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u8(self.code())
    }
}

impl<'de> Deserialize<'de> for ResponseKind {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let code = i64::deserialize(deserializer)?;
        ResponseKind::from_code(code)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown response type {code}")))
    }
}

/// A server response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// The id the response is about (`"None"` when the request could not be read).
    #[serde(alias = "client_ID")]
    pub client_id: String,
    /// Success, error or info.
    #[serde(rename = "type")]
    pub kind: ResponseKind,
    /// The record, a confirmation or the reason for an error.
    pub data: String,
}

impl Response {
    /// A response of the given kind.
    pub fn new(client_id: impl Into<String>, kind: ResponseKind, data: impl Into<String>) -> Self {
        Response {
            client_id: client_id.into(),
            kind,
            data: data.into(),
        }
    }

    /// A success response.
    pub fn success(client_id: impl Into<String>, data: impl Into<String>) -> Self {
        Response::new(client_id, ResponseKind::Success, data)
    }

    /// An error response.
    pub fn error(client_id: impl Into<String>, data: impl Into<String>) -> Self {
        Response::new(client_id, ResponseKind::Error, data)
    }

    /// The seed's answer to bytes that are not a valid request.
    pub fn invalid_format() -> Self {
        Response::error(UNKNOWN_CLIENT_ID, INVALID_FORMAT)
    }

    /// Appends the response as the seed's server writes it: `json.dumps` bytes, plus one newline
    /// when their length is a multiple of [`SEED_READ_CHUNK`].
    pub fn encode(&self, dst: &mut BytesMut) -> Result<(), RecordError> {
        let json = to_python_json(self)?;
        let padded = json.len() % SEED_READ_CHUNK == 0;
        dst.reserve(json.len() + usize::from(padded));
        dst.put_slice(&json);
        if padded {
            dst.put_u8(b'\n');
        }
        Ok(())
    }

    /// The response as bytes on the wire.
    pub fn to_bytes(&self) -> Result<BytesMut, RecordError> {
        let mut out = BytesMut::new();
        self.encode(&mut out)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn invalid_format_response_is_byte_exact() {
        let bytes = Response::invalid_format().to_bytes().unwrap();
        assert_eq!(
            &bytes[..],
            br#"{"client_id": "None", "type": 2, "data": "Invalid request format, please send a valid JSON request."}"#
        );
    }

    #[test]
    fn write_ok_response_is_byte_exact() {
        let bytes = Response::success("150210710", WRITE_OK).to_bytes().unwrap();
        assert_eq!(
            &bytes[..],
            br#"{"client_id": "150210710", "type": 1, "data": "File updated successfully."}"#
        );
    }

    #[test]
    fn a_response_of_exactly_1024_bytes_is_padded() {
        let empty = Response::success("x", "").to_bytes().unwrap().len();
        let response = Response::success("x", "a".repeat(SEED_READ_CHUNK - empty));
        let bytes = response.to_bytes().unwrap();
        assert_eq!(bytes.len(), SEED_READ_CHUNK + 1);
        assert_eq!(bytes.last(), Some(&b'\n'));
        let parsed: Response = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(parsed, response);
    }

    #[test]
    fn unknown_response_type_is_refused() {
        let err = serde_json::from_str::<Response>(r#"{"client_id": "1", "type": 9, "data": ""}"#)
            .unwrap_err();
        assert!(err.to_string().contains("unknown response type 9"), "{err}");
    }

    proptest! {
        #[test]
        fn no_response_length_is_a_multiple_of_1024(
            id in "[0-9]{1,12}",
            data in any::<String>(),
            kind in prop_oneof![Just(ResponseKind::Success), Just(ResponseKind::Error), Just(ResponseKind::Info)],
            pad in 0usize..2100,
        ) {
            let response = Response::new(id, kind, format!("{}{data}", "z".repeat(pad)));
            let bytes = response.to_bytes().unwrap();
            prop_assert_ne!(bytes.len() % SEED_READ_CHUNK, 0);
            prop_assert!(bytes.is_ascii(), "ensure_ascii output");
            prop_assert_eq!(serde_json::from_slice::<Response>(&bytes).unwrap(), response);
        }
    }
}
