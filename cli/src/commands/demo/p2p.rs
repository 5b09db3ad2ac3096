//! The peer-to-peer chat's part of the demo (seed 004): a signaling server, three peers with
//! their visibility and presence, an introduction, then chat, a file and a media stream straight
//! between two peers through a relay that drops 10% of datagrams, a forged datagram dropped,
//! and the close.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context, bail};
use chat_p2p::peer::{PeerClient, PeerConfig, PeerEvent, SessionConfig, SessionEvent};
use chat_p2p::signal::{self, SignalConfig};
use protocol::chat::ChatFrame;
use protocol::p2p::secure::Role;
use protocol::p2p::signal::{Presence, Visibility};
use server_kit::lossy_relay::LossyRelay;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::oneshot;
use tokio::time::timeout;

use super::{STEP_TIMEOUT, show};
use crate::commands::scratch::ScratchDir;

/// The size of the file sent through the lossy relay.
const FILE_BYTES: u32 = 1_000_000;

/// Runs the part.
pub(super) async fn demo() -> anyhow::Result<()> {
    println!(
        "== Peer-to-peer chat (seed 004): a signaling server introduces peers, who then talk \
         straight over UDP =="
    );
    let scratch = ScratchDir::new("p2p")?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let config = SignalConfig {
        data_dir: scratch.path().to_owned(),
        ..SignalConfig::default()
    };
    let server = tokio::spawn(signal::run(listener, config, async {
        let _ = stopped.await;
    }));
    println!("signaling server on {addr}; accounts in accounts.json (argon2id hashes)");

    raw_exchange(addr).await?;
    let bob_socket = UdpSocket::bind("127.0.0.1:0").await?;
    let relay = LossyRelay::start(bob_socket.local_addr()?, 0.10, 7).await?;
    let downloads = scratch.path().join("bob");
    std::fs::create_dir(&downloads)?;
    let mut alice = peer(addr, "alice", None, scratch.path()).await?;
    let mut bob = peer_on(
        bob_socket,
        addr,
        "bob",
        Some(relay.local_addr()),
        &downloads,
    )
    .await?;
    let mut carol = peer(addr, "carol", None, scratch.path()).await?;
    println!(
        "-- bob announces {} (--public-addr): a relay there forwards to him, dropping 10% of \
         datagrams each way",
        relay.local_addr()
    );

    presence(&mut alice, &bob, &carol).await?;
    introduce(&mut alice, &mut bob).await?;
    talk(&mut alice, &mut bob, scratch.path(), &downloads).await?;
    forged_datagram(&mut bob).await?;
    stream(&mut alice, &mut bob, scratch.path()).await?;
    close(&mut alice, &mut bob, &mut carol).await?;
    println!(
        "   the relay forwarded {} datagrams and dropped {}",
        relay.forwarded(),
        relay.dropped()
    );

    for client in [alice, bob, carol] {
        client.quit().await;
    }
    let _ = stop.send(());
    timeout(STEP_TIMEOUT, server).await???;
    println!("signaling server stopped");
    Ok(())
}

/// Shows one request and its reply as the bytes on the wire.
async fn raw_exchange(addr: SocketAddr) -> anyhow::Result<()> {
    println!("-- the wire: a 10-byte length header, then one JSON message:");
    let mut stream = TcpStream::connect(addr).await?;
    let request = ChatFrame::new(br#"{"type":"list"}"#).context("a frame")?;
    stream.write_all(request.as_bytes()).await?;
    let mut header = [0; 10];
    timeout(STEP_TIMEOUT, stream.read_exact(&mut header)).await??;
    let len: usize = std::str::from_utf8(&header)?.trim().parse()?;
    let mut payload = vec![0; len];
    timeout(STEP_TIMEOUT, stream.read_exact(&mut payload)).await??;
    println!("   sent     {}", show(request.as_bytes()));
    println!("   received {}", show(&[&header[..], &payload].concat()));
    Ok(())
}

/// A peer on a socket of its own, signed up and logged in.
async fn peer(
    addr: SocketAddr,
    user: &str,
    public: Option<SocketAddr>,
    downloads: &Path,
) -> anyhow::Result<PeerClient> {
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    peer_on(socket, addr, user, public, downloads).await
}

/// A peer on `socket`, signed up and logged in.
async fn peer_on(
    socket: UdpSocket,
    addr: SocketAddr,
    user: &str,
    public: Option<SocketAddr>,
    downloads: &Path,
) -> anyhow::Result<PeerClient> {
    let config = PeerConfig {
        public_addr: public,
        session: SessionConfig {
            download_dir: downloads.to_owned(),
            ..SessionConfig::default()
        },
        ..PeerConfig::new(addr)
    };
    let mut client = PeerClient::with_socket(socket, config).await?;
    let password = format!("{user} has a long password");
    client.signup(user, &password).await?;
    let announced = client.login(user, &password).await?;
    println!("   {user} signs up, logs in and announces {announced}");
    Ok(client)
}

/// Visibility and presence, as others see them.
async fn presence(
    alice: &mut PeerClient,
    bob: &PeerClient,
    carol: &PeerClient,
) -> anyhow::Result<()> {
    println!("-- alice lets only bob see her; carol goes away:");
    alice
        .set_visibility(Visibility::Allow(vec!["bob".to_owned()]))
        .await?;
    carol.set_presence(Presence::Away).await?;
    for (name, client) in [("bob", bob), ("carol", carol)] {
        let peers: Vec<String> = client
            .list()
            .await?
            .into_iter()
            .map(|peer| format!("{} ({})", peer.username, peer.state))
            .collect();
        println!("   {name}'s list: {}", peers.join(", "));
    }
    match carol.query("alice").await {
        Ok(info) => bail!("carol could query alice: {info:?}"),
        Err(err) => println!("   carol queries alice: {err}"),
    }
    alice.connect("carol").await?;
    let declined = next(alice, |event| matches!(event, PeerEvent::Declined { .. })).await?;
    if let PeerEvent::Declined { peer, reason } = declined {
        println!("   alice asks to talk to carol: declined by the server for {peer}: {reason}");
    }
    Ok(())
}

/// alice asks for bob, bob accepts, both get the session.
async fn introduce(alice: &mut PeerClient, bob: &mut PeerClient) -> anyhow::Result<()> {
    println!("-- alice asks to talk to bob; bob accepts; both get a fresh key:");
    alice.connect("bob").await?;
    next(bob, |event| matches!(event, PeerEvent::Introduction { .. })).await?;
    bob.accept(Some("alice")).await?;
    for (name, client) in [("alice", &mut *alice), ("bob", &mut *bob)] {
        let started = next(client, |event| {
            matches!(event, PeerEvent::SessionStarted { .. })
        })
        .await?;
        if let PeerEvent::SessionStarted {
            peer,
            address,
            role,
        } = started
        {
            let role = match role {
                Role::Initiator => "initiator (opens the reliable connection)",
                Role::Acceptor => "acceptor",
            };
            println!("   {name}: session with {peer} at {address}, as {role}");
        }
    }
    Ok(())
}

/// Chat both ways and a file through the relay.
async fn talk(
    alice: &mut PeerClient,
    bob: &mut PeerClient,
    scratch: &Path,
    downloads: &Path,
) -> anyhow::Result<()> {
    println!("-- chat and a file, straight between the peers, through the lossy relay:");
    alice.send_text("hi bob, over UDP").await?;
    bob.send_text("hi alice: every datagram sealed with ChaCha20-Poly1305")
        .await?;
    for (name, client) in [("bob", &mut *bob), ("alice", &mut *alice)] {
        if let PeerEvent::Session {
            peer,
            event: SessionEvent::Message { text },
        } = next(client, is_message).await?
        {
            println!("   {name} prints: {peer} > {text}");
        }
    }
    let path = scratch.join("slides.pdf");
    let body: Vec<u8> = (0..FILE_BYTES).map(|i| (i ^ (i >> 9)) as u8).collect();
    std::fs::write(&path, &body)?;
    let ticket = alice.send_file(&path).await?;
    println!("   alice sends {} ({} bytes)", ticket.name, ticket.size);
    next(bob, |event| {
        matches!(
            event,
            PeerEvent::Session {
                event: SessionEvent::FileSaved { .. },
                ..
            }
        )
    })
    .await?;
    next(alice, |event| {
        matches!(
            event,
            PeerEvent::Session {
                event: SessionEvent::FileDelivered { .. },
                ..
            }
        )
    })
    .await?;
    let saved = std::fs::read(downloads.join("slides.pdf"))?;
    if saved != body {
        bail!("the file arrived damaged");
    }
    let stats = alice.session().context("alice's session")?.stats();
    println!(
        "   bob saved slides.pdf, SHA-256 verified and identical; alice's side sent {} datagrams, \
         {} of them again",
        stats.reliable.datagrams_sent, stats.reliable.retransmissions
    );
    Ok(())
}

/// A datagram with bob's session header and garbage instead of ciphertext.
async fn forged_datagram(bob: &mut PeerClient) -> anyhow::Result<()> {
    println!("-- a forged datagram sent to bob's socket is dropped and counted:");
    let target = bob.udp_addr()?;
    let before = bob.session().context("bob's session")?.stats().secure;
    let number = bob.session_number().context("bob's session")?;
    // Kind 1, direction 0 (from the initiator), bob's session, a counter, then no valid tag.
    let mut forged = b"P\x01\x01\x00".to_vec();
    forged.extend_from_slice(&number.to_be_bytes());
    forged.extend_from_slice(&9_999_999u64.to_be_bytes());
    forged.extend_from_slice(&[0x42; 48]);
    let attacker = UdpSocket::bind("127.0.0.1:0").await?;
    attacker.send_to(&forged, target).await?;
    let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
    loop {
        let now = bob.session().context("bob's session")?.stats().secure;
        if now.forged > before.forged {
            println!(
                "   bob's counts: {} opened, {} forged, {} replayed, {} foreign",
                now.opened, now.forged, now.replayed, now.foreign
            );
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the forged datagram was not counted");
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// A media stream through the lossy relay: sent once, loss and jitter reported.
async fn stream(
    alice: &mut PeerClient,
    bob: &mut PeerClient,
    scratch: &Path,
) -> anyhow::Result<()> {
    println!("-- a media stream at its real-time rate, never retransmitted:");
    let path = scratch.join("voice.raw");
    std::fs::write(&path, vec![0x55; 64 * 1024])?;
    let ticket = alice.stream_file(&path).await?;
    println!(
        "   alice streams {} ({} chunks, one second)",
        ticket.name, ticket.chunks
    );
    if let PeerEvent::Session {
        event: SessionEvent::StreamReceived { report, .. },
        ..
    } = next(bob, |event| {
        matches!(
            event,
            PeerEvent::Session {
                event: SessionEvent::StreamReceived { .. },
                ..
            }
        )
    })
    .await?
    {
        println!(
            "   bob's report: {} of {} chunks, {} lost ({:.1}%), {} reordered, jitter {:.2} ms",
            report.received,
            report.sent,
            report.lost,
            report.loss_percent(),
            report.reordered,
            f64::from(report.jitter_us) / 1000.0
        );
    }
    next(alice, |event| {
        matches!(
            event,
            PeerEvent::Session {
                event: SessionEvent::StreamSent { .. },
                ..
            }
        )
    })
    .await?;
    println!("   alice gets the same report back");
    Ok(())
}

/// alice closes; bob hears it from the server and from the session; both available again.
async fn close(
    alice: &mut PeerClient,
    bob: &mut PeerClient,
    carol: &mut PeerClient,
) -> anyhow::Result<()> {
    println!("-- alice closes the session (everything she sent is acknowledged first):");
    alice.close().await?;
    for (name, client) in [("alice", &mut *alice), ("bob", &mut *bob)] {
        let ended = next(client, |event| {
            matches!(
                event,
                PeerEvent::Session {
                    event: SessionEvent::Ended { .. },
                    ..
                }
            )
        })
        .await?;
        if let PeerEvent::Session {
            event: SessionEvent::Ended { reason },
            ..
        } = ended
        {
            println!("   {name}: session ended: {reason}");
        }
    }
    carol.set_presence(Presence::Available).await?;
    let peers: Vec<String> = bob
        .list()
        .await?
        .into_iter()
        .map(|peer| format!("{} ({})", peer.username, peer.state))
        .collect();
    println!("   carol is back; bob's list now: {}", peers.join(", "));
    Ok(())
}

fn is_message(event: &PeerEvent) -> bool {
    matches!(
        event,
        PeerEvent::Session {
            event: SessionEvent::Message { .. },
            ..
        }
    )
}

/// The next event of `client` that `wanted` accepts (others are passed over), within the step
/// timeout.
async fn next(
    client: &mut PeerClient,
    wanted: impl Fn(&PeerEvent) -> bool,
) -> anyhow::Result<PeerEvent> {
    timeout(STEP_TIMEOUT, async {
        loop {
            match client.next_event().await {
                Some(event) if wanted(&event) => return Ok(event),
                Some(_) => continue,
                None => bail!("the signaling connection closed"),
            }
        }
    })
    .await
    .context("the demo waited too long for an event")?
}
