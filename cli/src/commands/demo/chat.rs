//! The chat's part of the demo: the room (three clients speaking the seed's raw bytes, what the
//! room relays, a taken username, a bad header closing one client only, the client library) and
//! the TCP-versus-UDP transfer.

use std::net::SocketAddr;

use anyhow::{Context, bail};
use bytes::Bytes;
use chat_p2p::room::{self, RoomConfig};
use chat_p2p::transfer::receive::{self, ReceiverConfig};
use chat_p2p::transfer::send::{self, SendConfig};
use protocol::chat::{ChatFrame, HEADER_LEN};
use protocol::chat_transfer::Transport;
use server_kit::lossy_relay::LossyRelay;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;

use super::{STEP_TIMEOUT, show};
use crate::commands::chat::print_reports;
use crate::commands::scratch::ScratchDir;

/// The seed's framing: `f"{len(payload):<10}"` then the payload.
fn frame(payload: &[u8]) -> Bytes {
    ChatFrame::new(payload)
        .expect("a demo-sized payload")
        .as_bytes()
        .clone()
}

/// One relayed message, as raw bytes: two frames, each read by its header.
async fn read_message(stream: &mut TcpStream) -> anyhow::Result<Vec<u8>> {
    let mut message = Vec::new();
    for _ in 0..2 {
        let mut header = [0; 10];
        stream.read_exact(&mut header).await?;
        let len: usize = std::str::from_utf8(&header)?.trim().parse()?;
        let mut payload = vec![0; len];
        stream.read_exact(&mut payload).await?;
        message.extend_from_slice(&header);
        message.extend(payload);
    }
    Ok(message)
}

/// A raw client that sent its username frame.
async fn raw_client(addr: SocketAddr, name: &str) -> anyhow::Result<TcpStream> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(&frame(name.as_bytes())).await?;
    Ok(stream)
}

/// Starts a room with announcements, runs the clients, stops it.
pub(super) async fn demo() -> anyhow::Result<()> {
    println!(
        "== Chat room (seed 003): a 10-byte length header, every message relayed to the others =="
    );
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    println!("room listening on {addr}, joins and leaves announced by `server`");
    let (stop, stopped) = oneshot::channel::<()>();
    let config = RoomConfig {
        announce: true,
        ..RoomConfig::default()
    };
    let server = tokio::spawn(room::run(listener, config, async {
        let _ = stopped.await;
    }));

    println!("-- three clients join, as raw bytes:");
    let mut alice = raw_client(addr, "alice").await?;
    let mut bob = raw_client(addr, "bob").await?;
    println!(
        "   alice sends {}, bob {}",
        show(&frame(b"alice")),
        show(&frame(b"bob"))
    );
    // Joins are not acknowledged: whichever the room took second is announced to the other.
    let (hearer, heard) = timeout(STEP_TIMEOUT, async {
        tokio::select! {
            heard = read_message(&mut alice) => ("alice", heard),
            heard = read_message(&mut bob) => ("bob", heard),
        }
    })
    .await?;
    println!("   {hearer} receives {}", show(&heard?));
    let mut carol = raw_client(addr, "Søren").await?;
    for (name, client) in [("alice", &mut alice), ("bob", &mut bob)] {
        let heard = timeout(STEP_TIMEOUT, read_message(client)).await??;
        println!("   Søren joins; {name} receives {}", show(&heard));
    }

    println!("-- alice says hello; the others get her name frame and her message frame:");
    alice.write_all(&frame(b"hello, room")).await?;
    println!("   alice sent     {}", show(&frame(b"hello, room")));
    for (name, client) in [("bob", &mut bob), ("Søren", &mut carol)] {
        let heard = timeout(STEP_TIMEOUT, read_message(client)).await??;
        println!("   {name:<5} receives {}", show(&heard));
    }

    println!("-- a second alice is refused, by a message from `server`:");
    let mut twin = raw_client(addr, "alice").await?;
    let mut refusal = Vec::new();
    timeout(STEP_TIMEOUT, twin.read_to_end(&mut refusal)).await??;
    println!("   received {}, then the connection closed", show(&refusal));

    println!("-- a bad header closes its sender only:");
    bob.write_all(b"hello worl").await?;
    let told = timeout(STEP_TIMEOUT, read_message(&mut bob)).await??;
    let mut rest = Vec::new();
    timeout(STEP_TIMEOUT, bob.read_to_end(&mut rest)).await??;
    println!(
        "   bob sent {}; bob is told {:?}, then closed",
        show(b"hello worl"),
        String::from_utf8_lossy(&told[HEADER_LEN + 6 + HEADER_LEN..])
    );
    let left = timeout(STEP_TIMEOUT, read_message(&mut alice)).await??;
    timeout(STEP_TIMEOUT, read_message(&mut carol)).await??; // the same
    println!("   alice and Søren receive {}", show(&left));

    println!("-- the client library (what `cli chat join` uses):");
    let (mut dana, mut dana_in) = room::join(addr, "dana", STEP_TIMEOUT).await?;
    for client in [&mut alice, &mut carol] {
        timeout(STEP_TIMEOUT, read_message(client)).await??; // dana joined
    }
    dana.send("hi all").await?;
    let heard = timeout(STEP_TIMEOUT, read_message(&mut carol)).await??;
    println!("   dana sends \"hi all\"; Søren receives {}", show(&heard));
    carol.write_all(&frame("hej dana 👋".as_bytes())).await?;
    let message = timeout(STEP_TIMEOUT, dana_in.next())
        .await??
        .context("the room closed")?;
    println!(
        "   dana's reader gives: {} > {}",
        message.user, message.text
    );
    if message.user != "Søren" {
        bail!("dana heard {message:?}");
    }
    dana.close().await;

    let _ = stop.send(());
    timeout(STEP_TIMEOUT, server).await???;
    let mut last = Vec::new();
    timeout(STEP_TIMEOUT, alice.read_to_end(&mut last)).await??;
    println!(
        "room stopped; alice's last bytes: {}",
        show(&last[last.len().saturating_sub(45)..])
    );
    Ok(())
}

/// The size of the file the transfer part sends.
const TRANSFER_BYTES: u32 = 2_000_000;

/// Starts a transfer receiver, sends one file over TCP and over plain UDP through a relay that
/// drops 5% of datagrams, and shows both reports.
pub(super) async fn transfer_demo() -> anyhow::Result<()> {
    println!("== Chat transfer (seed 003, task 3): one file over TCP and over plain UDP ==");
    let scratch = ScratchDir::new("transfer")?;
    let out = scratch.path().join("received");
    std::fs::create_dir(&out)?;
    let source = scratch.path().join("lecture.mp4");
    let body: Vec<u8> = (0..TRANSFER_BYTES).map(|i| (i ^ (i >> 11)) as u8).collect();
    std::fs::write(&source, &body)?;
    let (tcp, udp) = receive::bind(([127, 0, 0, 1], 0).into()).await?;
    let addr = tcp.local_addr()?;
    let relay = LossyRelay::start(udp.local_addr()?, 0.05, 3).await?;
    println!(
        "receiver on {addr} (TCP and UDP), saving to {}; the UDP datagrams go through a relay \
         dropping 5%",
        out.display()
    );
    let (reports, mut received) = mpsc::channel(4);
    let (stop, stopped) = oneshot::channel::<()>();
    let config = ReceiverConfig::new(&out);
    let receiver = tokio::spawn(receive::run(tcp, udp, config, reports, async {
        let _ = stopped.await;
    }));

    let mut sent = Vec::new();
    for transport in [Transport::Tcp, Transport::Udp] {
        let mut config = SendConfig::new(transport);
        if transport == Transport::Udp {
            config.udp_target = Some(relay.local_addr());
            config.rate = Some(20 * 1024 * 1024);
        }
        let report = timeout(
            STEP_TIMEOUT,
            send::send_file(&source, addr, &config, |_, _| {}),
        )
        .await??;
        timeout(STEP_TIMEOUT, received.recv())
            .await?
            .context("the receiver stopped")?;
        sent.push(report);
    }
    println!(
        "-- {} bytes each way; UDP paced at 20 MiB/s, {} datagrams of 1200 bytes, no retransmission:",
        body.len(),
        sent[1].datagrams.expected
    );
    print_reports(&sent, true);
    println!("the relay dropped {} datagrams", relay.dropped());
    if !sent[0].intact {
        bail!("the TCP copy is not intact");
    }
    let mut names: Vec<String> = std::fs::read_dir(&out)?
        .map(|entry| entry.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    names.sort();
    println!("in {}: {}", out.display(), names.join(", "));

    let _ = stop.send(());
    timeout(STEP_TIMEOUT, receiver).await???;
    println!("receiver stopped");
    Ok(())
}
