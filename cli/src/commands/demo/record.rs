//! The record server's part of the demo: the seed client's raw requests and the answers, read
//! the way the seed reads them.

use anyhow::bail;
use protocol::record::SEED_READ_CHUNK;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::time::timeout;

use super::{STEP_TIMEOUT, show};
use crate::commands::scratch::ScratchDir;

/// A write as the seed's client sends it: its `client_ID` key, `json.dumps` spacing and
/// `\uXXXX` escapes, and its own `Last updated:` line, which the server replaces.
const SEED_WRITE: &str = r#"{"client_ID": "150210710", "type": 1, "data": "Last updated: 2024-03-18 13:14:33\nStudent ID: 150210710\nName: Fatih Bask\u0131n\nDate of Birth: 23/11/2000\nCity: Tekirda\u011f\nReason: I want to learn about how Internet and WEB works"}"#;

/// Starts a record server, sends it the seed's requests and stops it.
pub(super) async fn demo() -> anyhow::Result<()> {
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
