//! Keeps `docs/chat-p2p.md` true: its JSON examples are real messages (one for every type), its
//! byte-layout tables match the code, and its transcript of a first log-in is what a real
//! signaling server answers, byte for byte.

use std::time::Duration;

use chat_p2p::signal::{self, SignalConfig};
use integration_tests::{PATIENCE, RunningServer};
use protocol::chat::encode_header;
use protocol::p2p::session::KINDS as SESSION_KINDS;
use protocol::p2p::signal::{ClientMessage, ServerMessage, decode};
use protocol::p2p::{secure, stream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const DOC: &str = include_str!("../../docs/chat-p2p.md");

/// The bodies of the fenced blocks of `language`.
fn blocks(language: &str) -> Vec<&'static str> {
    let fence = format!("```{language}\n");
    DOC.split(fence.as_str())
        .skip(1)
        .map(|rest| rest.split("```").next().expect("a fenced block ends"))
        .collect()
}

/// The request kinds, with a match that stops compiling when a message is added.
fn client_kinds() -> Vec<&'static str> {
    fn covered(message: &ClientMessage) {
        match message {
            ClientMessage::Signup { .. }
            | ClientMessage::Login { .. }
            | ClientMessage::Logout {}
            | ClientMessage::Announce { .. }
            | ClientMessage::List {}
            | ClientMessage::Query { .. }
            | ClientMessage::State { .. }
            | ClientMessage::Visibility { .. }
            | ClientMessage::Connect { .. }
            | ClientMessage::Accept { .. }
            | ClientMessage::Decline { .. }
            | ClientMessage::Close {} => {}
        }
    }
    let _ = covered;
    vec![
        "signup",
        "login",
        "logout",
        "announce",
        "list",
        "query",
        "state",
        "visibility",
        "connect",
        "accept",
        "decline",
        "close",
    ]
}

/// The server's kinds, with a match that stops compiling when a message is added.
fn server_kinds() -> Vec<&'static str> {
    fn covered(message: &ServerMessage) {
        match message {
            ServerMessage::Ok { .. }
            | ServerMessage::Error { .. }
            | ServerMessage::Peers { .. }
            | ServerMessage::Peer { .. }
            | ServerMessage::Introduction { .. }
            | ServerMessage::Session { .. }
            | ServerMessage::Declined { .. }
            | ServerMessage::SessionEnded { .. } => {}
        }
    }
    let _ = covered;
    vec![
        "ok",
        "error",
        "peers",
        "peer",
        "introduction",
        "session",
        "declined",
        "session_ended",
    ]
}

#[test]
fn every_json_example_is_a_message_and_every_message_has_one() {
    let mut requests = Vec::new();
    let mut answers = Vec::new();
    for block in blocks("json") {
        let text = block.trim();
        if let Ok(message) = decode::<ClientMessage>(text.as_bytes()) {
            requests.push(message.kind());
        } else {
            let message: ServerMessage = decode(text.as_bytes())
                .unwrap_or_else(|err| panic!("the example {text} is no message: {err}"));
            answers.push(message.kind());
        }
    }
    for kind in client_kinds() {
        assert!(requests.contains(&kind), "no example of the request {kind}");
    }
    for kind in server_kinds() {
        assert!(answers.contains(&kind), "no example of the server's {kind}");
    }
}

#[test]
fn every_session_message_is_described() {
    for kind in SESSION_KINDS {
        assert!(
            DOC.contains(&format!("| `{kind}` |")),
            "the session message {kind} has no row in the table"
        );
    }
}

/// The `(offset, size)` rows of the table that follows `heading` up to the first `n`-sized
/// field.
fn layout(heading: &str) -> Vec<(usize, usize)> {
    let section = DOC.split(heading).nth(1).expect("the section exists");
    section
        .lines()
        .skip_while(|line| !line.starts_with("| offset"))
        .skip(2)
        .take_while(|line| line.starts_with('|'))
        .map_while(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            Some((cells[1].parse().ok()?, cells[2].parse().ok()?))
        })
        .collect()
}

/// Fields follow one another without gaps, and end where the header does.
fn assert_contiguous(rows: &[(usize, usize)], header_len: usize) {
    let mut end = 0;
    for &(offset, size) in rows {
        assert_eq!(offset, end, "a gap or overlap at offset {offset}");
        end = offset + size;
    }
    assert_eq!(end, header_len);
}

#[test]
fn the_layout_tables_match_the_code() {
    assert_contiguous(&layout("## Sealed datagrams"), secure::HEADER_LEN);
    assert!(DOC.contains(&format!("| 16 + n | {} | Poly1305 tag |", secure::TAG_LEN)));
    assert!(DOC.contains(&format!("{} counters behind", secure::REPLAY_WINDOW)));
    assert_contiguous(&layout("## Stream chunks"), stream::CHUNK_HEADER_LEN);
}

/// Sends `payload` as one frame.
async fn send_frame(stream: &mut TcpStream, payload: &str) {
    let mut frame = encode_header(payload.len())
        .expect("a small payload")
        .to_vec();
    frame.extend_from_slice(payload.as_bytes());
    stream.write_all(&frame).await.expect("send");
}

/// Reads one frame's payload.
async fn read_frame(stream: &mut TcpStream) -> String {
    let mut header = [0; 10];
    tokio::time::timeout(PATIENCE, stream.read_exact(&mut header))
        .await
        .expect("a reply in time")
        .expect("a header");
    let length: usize = std::str::from_utf8(&header)
        .expect("ASCII")
        .trim()
        .parse()
        .expect("a length");
    let mut payload = vec![0; length];
    stream.read_exact(&mut payload).await.expect("a payload");
    String::from_utf8(payload).expect("UTF-8")
}

#[tokio::test]
async fn the_transcript_of_a_first_log_in_is_what_the_server_answers() {
    let data = tempfile::tempdir().expect("tempdir");
    let config = SignalConfig {
        data_dir: data.path().to_owned(),
        failed_login_delay: Duration::from_millis(50),
        ..SignalConfig::default()
    };
    let server =
        RunningServer::start(|listener, shutdown| signal::run(listener, config, shutdown)).await;
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    let transcript = blocks("text")
        .into_iter()
        .find(|block| block.starts_with("> "))
        .expect("the transcript");
    for line in transcript.lines() {
        if let Some(request) = line.strip_prefix("> ") {
            send_frame(&mut stream, request).await;
        } else if let Some(expected) = line.strip_prefix("< ") {
            assert_eq!(read_frame(&mut stream).await, expected);
        }
    }
    server.stop().await;
}
