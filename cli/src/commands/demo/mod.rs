//! `cli demo`: each system started on a free loopback port, exercised, shown and stopped.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use addressbook::{AddressBook, Client, ServerConfig};
use anyhow::{Context, bail};
use protocol::addressbook::{HEADER_LEN, Message, parse_header};
use protocol::record::SEED_READ_CHUNK;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::time::timeout;

use super::addressbook::describe;
use super::runtime;
use crate::logging;

/// How long any one step of the demo may take before it is reported as a failure.
const STEP_TIMEOUT: Duration = Duration::from_secs(5);

/// A write as the seed's client sends it: its `client_ID` key, `json.dumps` spacing and
/// `\uXXXX` escapes, and its own `Last updated:` line, which the server replaces.
const SEED_WRITE: &str = r#"{"client_ID": "150210710", "type": 1, "data": "Last updated: 2024-03-18 13:14:33\nStudent ID: 150210710\nName: Fatih Bask\u0131n\nDate of Birth: 23/11/2000\nCity: Tekirda\u011f\nReason: I want to learn about how Internet and WEB works"}"#;

/// Runs the demo of every system built so far.
pub fn run() -> anyhow::Result<ExitCode> {
    logging::init("warn");
    let runtime = runtime()?;
    runtime.block_on(record_demo())?;
    println!();
    runtime.block_on(addressbook_demo())?;
    Ok(ExitCode::SUCCESS)
}

/// Bytes as a Python bytes literal, the way the seed's programs would print them: in double
/// quotes, or in single quotes when the bytes hold double quotes and no single ones.
fn show(bytes: &[u8]) -> String {
    let quote = if bytes.contains(&b'"') && !bytes.contains(&b'\'') {
        b'\''
    } else {
        b'"'
    };
    let mut text = format!("b{}", char::from(quote));
    for &byte in bytes {
        match byte {
            b'"' | b'\'' if byte != quote => text.push(char::from(byte)),
            _ => text.extend(byte.escape_ascii().map(char::from)),
        }
    }
    text.push(char::from(quote));
    text
}

async fn record_demo() -> anyhow::Result<()> {
    println!("== Record server (seed 000): student records as JSON over TCP ==");
    let scratch = ScratchDir::new("records")?;
    let (config, _) = record_server::ServerConfig::open_in(scratch.path())?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    println!(
        "server listening on {addr}, records in {}",
        scratch.path().display()
    );
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(record_server::run(listener, config, async {
        let _ = stopped.await;
    }));

    println!(
        "-- one connection, four requests, as raw bytes (responses read as the seed reads them):"
    );
    let mut stream = TcpStream::connect(addr).await?;
    for request in [
        SEED_WRITE,
        r#"{"client_ID": "150210710", "type": 2, "data": ""}"#,
        r#"{"client_id": "info", "type": 3, "data": ""}"#,
        "this is not JSON",
    ] {
        stream.write_all(request.as_bytes()).await?;
        let reply = timeout(STEP_TIMEOUT, read_like_the_seed(&mut stream)).await??;
        println!("   sent     {}", show(request.as_bytes()));
        println!("   received {}", show(&reply));
    }
    drop(stream);

    let _ = stop.send(());
    timeout(STEP_TIMEOUT, server).await???;
    println!("server stopped, records saved");
    Ok(())
}

/// A response read the way the seed's client reads it: 1024-byte chunks until one is shorter.
async fn read_like_the_seed(stream: &mut TcpStream) -> anyhow::Result<Vec<u8>> {
    let mut response = Vec::new();
    let mut chunk = [0; SEED_READ_CHUNK];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("the server closed the connection");
        }
        response.extend_from_slice(&chunk[..n]);
        if n < SEED_READ_CHUNK {
            return Ok(response);
        }
    }
}

/// A folder of its own under the system's temporary folder, deleted when dropped.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new(purpose: &str) -> anyhow::Result<ScratchDir> {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.subsec_nanos();
        let path =
            std::env::temp_dir().join(format!("cli-demo-{purpose}-{}-{nanos}", std::process::id()));
        std::fs::create_dir(&path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(ScratchDir(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn addressbook_demo() -> anyhow::Result<()> {
    println!("== Address book (seed 002): e-mail to name over TCP, header struct \"!cb\" ==");
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let book = AddressBook::seed();
    println!(
        "server listening on {addr} with the seed's {} entries",
        book.len()
    );
    let server = tokio::spawn(addressbook::run(listener, ServerConfig::new(book), async {
        let _ = stopped.await;
    }));

    println!("-- three queries on one connection, as raw bytes:");
    let mut stream = TcpStream::connect(addr).await?;
    for email in [
        "luke@gmail.com",
        "Jihoon.Ryoo@SBU.edu",
        "nobody@example.com",
    ] {
        let query = Message::query(email)?.to_bytes();
        stream.write_all(&query).await?;
        let reply = timeout(STEP_TIMEOUT, read_raw_message(&mut stream)).await??;
        println!("   sent {:<28} received {}", show(&query), show(&reply));
    }
    drop(stream);

    println!("-- the client library, queries pipelined on one connection:");
    let emails: Vec<String> = [
        "abc@gmail.com",
        "roshan.poudel@stonybrook.edu",
        "vader@empire.gov",
    ]
    .map(String::from)
    .into();
    let mut client = Client::connect(addr, STEP_TIMEOUT).await?;
    for (email, lookup) in emails.iter().zip(client.lookup_all(&emails).await?) {
        println!("   {}", describe(email, &lookup));
    }
    drop(client);

    println!("-- a protocol violation (type byte X instead of Q):");
    let mut bad = TcpStream::connect(addr).await?;
    bad.write_all(b"X\x05hello").await?;
    let mut reply = Vec::new();
    timeout(STEP_TIMEOUT, bad.read_to_end(&mut reply))
        .await
        .context("the server did not close the violating connection")??;
    println!(
        "   sent {} received {}, then the server closed the connection",
        show(b"X\x05hello"),
        show(&reply)
    );

    let _ = stop.send(());
    timeout(STEP_TIMEOUT, server).await???;
    println!("server stopped");
    Ok(())
}

/// One message read off the stream exactly as it arrived: the header, then the body it announces.
async fn read_raw_message(stream: &mut TcpStream) -> anyhow::Result<Vec<u8>> {
    let mut message = vec![0; HEADER_LEN];
    stream.read_exact(&mut message).await?;
    let (_, len) = parse_header([message[0], message[1]])?;
    message.resize(HEADER_LEN + len, 0);
    stream.read_exact(&mut message[HEADER_LEN..]).await?;
    Ok(message)
}
