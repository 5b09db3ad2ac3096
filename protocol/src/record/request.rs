//! The record server's request: who it is about, what to do, and the payload.

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

/// The operations a request can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestKind {
    /// 1: store `data` as the record of `client_id`.
    Write,
    /// 2: return the record of `client_id`.
    Read,
    /// 3: return the server's status.
    Info,
    /// 4: set (the first time) or check the password of `client_id`, given in `data`.
    Auth,
}

impl RequestKind {
    /// The number on the wire.
    pub const fn code(self) -> u8 {
        match self {
            RequestKind::Write => 1,
            RequestKind::Read => 2,
            RequestKind::Info => 3,
            RequestKind::Auth => 4,
        }
    }

    /// The kind a wire number stands for, if any.
    pub const fn from_code(code: i64) -> Option<RequestKind> {
        match code {
            1 => Some(RequestKind::Write),
            2 => Some(RequestKind::Read),
            3 => Some(RequestKind::Info),
            4 => Some(RequestKind::Auth),
            _ => None,
        }
    }

    /// The operation's name in log lines (`Handling write request of client: ...`).
    pub const fn name(self) -> &'static str {
        match self {
            RequestKind::Write => "write",
            RequestKind::Read => "read",
            RequestKind::Info => "info",
            RequestKind::Auth => "auth",
        }
    }
}

/// The `type` of a request as it arrived: a known operation, or any other JSON value, which is a
/// well-formed request the server answers with the seed's "Invalid request type".
#[derive(Debug, Clone, PartialEq)]
pub enum RequestType {
    /// One of the operations we serve.
    Known(RequestKind),
    /// Anything else, kept as sent.
    Unknown(Value),
}

impl From<RequestKind> for RequestType {
    fn from(kind: RequestKind) -> Self {
        RequestType::Known(kind)
    }
}

impl Serialize for RequestType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            RequestType::Known(kind) => serializer.serialize_u8(kind.code()),
            RequestType::Unknown(value) => value.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for RequestType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Ok(match value.as_i64().and_then(RequestKind::from_code) {
            Some(kind) => RequestType::Known(kind),
            None => RequestType::Unknown(value),
        })
    }
}

/// A client request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// The student id the request is about. The seed's client sends the key as `client_ID`; a
    /// number is accepted and read as its decimal text.
    #[serde(alias = "client_ID", deserialize_with = "string_or_integer")]
    pub client_id: String,
    /// The operation.
    #[serde(rename = "type")]
    pub request_type: RequestType,
    /// The record for a write, the password for auth, empty otherwise (and when absent).
    #[serde(default)]
    pub data: String,
}

impl Request {
    /// A request for a known operation.
    pub fn new(client_id: impl Into<String>, kind: RequestKind, data: impl Into<String>) -> Self {
        Request {
            client_id: client_id.into(),
            request_type: RequestType::Known(kind),
            data: data.into(),
        }
    }

    /// The operation, if it is one we know.
    pub fn kind(&self) -> Option<RequestKind> {
        match self.request_type {
            RequestType::Known(kind) => Some(kind),
            RequestType::Unknown(_) => None,
        }
    }

    /// The request as `json.dumps` would write it.
    pub fn to_bytes(&self) -> serde_json::Result<Vec<u8>> {
        super::to_python_json(self)
    }
}

fn string_or_integer<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    match Value::deserialize(deserializer)? {
        Value::String(text) => Ok(text),
        Value::Number(number) if number.is_i64() || number.is_u64() => Ok(number.to_string()),
        other => Err(de::Error::custom(format!(
            "client_id must be a string, not {other}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_spellings_of_the_id_key_are_accepted() {
        for key in ["client_id", "client_ID"] {
            let text = format!(r#"{{"{key}": "150210710", "type": 2, "data": ""}}"#);
            let request: Request = serde_json::from_str(&text).unwrap();
            assert_eq!(request, Request::new("150210710", RequestKind::Read, ""));
        }
    }

    #[test]
    fn missing_data_is_empty_and_numeric_ids_are_text() {
        let request: Request =
            serde_json::from_str(r#"{"client_id": 150210710, "type": 2}"#).unwrap();
        assert_eq!(request, Request::new("150210710", RequestKind::Read, ""));
    }

    #[test]
    fn unknown_types_are_kept_not_refused() {
        for (text, kept) in [
            ("7", Value::from(7)),
            (r#""1""#, Value::from("1")),
            ("null", Value::Null),
        ] {
            let json = format!(r#"{{"client_id": "1", "type": {text}, "data": ""}}"#);
            let request: Request = serde_json::from_str(&json).unwrap();
            assert_eq!(request.request_type, RequestType::Unknown(kept));
            assert_eq!(request.kind(), None);
        }
    }

    #[test]
    fn a_request_without_id_or_type_is_refused() {
        assert!(serde_json::from_str::<Request>(r#"{"type": 1, "data": ""}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"client_id": "1", "data": ""}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"client_id": [1], "type": 1}"#).is_err());
    }

    #[test]
    fn every_kind_round_trips_through_its_code() {
        for kind in [
            RequestKind::Write,
            RequestKind::Read,
            RequestKind::Info,
            RequestKind::Auth,
        ] {
            assert_eq!(RequestKind::from_code(kind.code().into()), Some(kind));
        }
        assert_eq!(RequestKind::from_code(0), None);
    }

    #[test]
    fn requests_are_written_like_json_dumps() {
        let request = Request::new("150210710", RequestKind::Read, "");
        assert_eq!(
            request.to_bytes().unwrap(),
            br#"{"client_id": "150210710", "type": 2, "data": ""}"#
        );
    }
}
