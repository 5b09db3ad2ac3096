//! The address book's part of the demo: raw `!cb` queries and answers, the client library's
//! pipelined lookups, and a protocol violation.

use addressbook::{AddressBook, Client, ServerConfig};
use anyhow::Context;
use protocol::addressbook::{HEADER_LEN, Message, parse_header};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::time::timeout;

use super::{STEP_TIMEOUT, show};
use crate::commands::addressbook::describe;

/// Starts an address book, queries it and stops it.
pub(super) async fn demo() -> anyhow::Result<()> {
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
