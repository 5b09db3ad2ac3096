//! The forum's part of the demo: two users over UDP, each through a relay that drops and
//! duplicates datagrams, running the seed's commands with their refusals, a file up and down the
//! TCP side channel, the thread file as it lies on disk, and what the reliable layer did.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, bail};
use forum_server::Forum;
use forum_server::client::{ClientError, ForumClient, TransportKind};
use forum_server::server::{ServerConfig, Transport};
use protocol::forum::{Cmd, Envelope};
use server_kit::lossy_relay::{Impairment, LossyRelay};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::oneshot;
use tokio::time::timeout;

use super::{STEP_TIMEOUT, show};
use crate::commands::scratch::ScratchDir;

/// What each client's relay does to its datagrams, both ways.
const IMPAIRMENT: Impairment = Impairment {
    loss: 0.2,
    duplication: 0.05,
};

/// One user's session, through a relay of its own.
struct User {
    name: &'static str,
    client: ForumClient,
    relay: LossyRelay,
}

impl User {
    /// Connects through a new relay and runs the seed's log-in dialogue, showing each step.
    async fn log_in(
        server: SocketAddr,
        name: &'static str,
        password: &str,
        seed: u64,
    ) -> anyhow::Result<User> {
        let relay = LossyRelay::start_with(server, IMPAIRMENT, seed).await?;
        let mut client =
            ForumClient::connect(relay.local_addr(), TransportKind::Udp, STEP_TIMEOUT).await?;
        let asked = client.request(Cmd::User.as_str(), &[name]).await?;
        let done = client.request(&asked.cmd, &[password]).await?;
        if done.cmd != Cmd::Done.as_str() {
            bail!("{name} could not log in: {:?}", done.args);
        }
        println!(
            "   {name:<8} user {name} -> {}; {} ******** -> {} {:?}",
            asked.cmd, asked.cmd, done.cmd, done.args
        );
        client.set_user(name);
        Ok(User {
            name,
            client,
            relay,
        })
    }

    /// Sends one command and shows it with the server's reply.
    async fn run(&mut self, cmd: &str, args: &[&str]) -> anyhow::Result<()> {
        let reply = self.client.request(cmd, args).await?;
        println!(
            "   {:<8} {:<38} -> {} {:?}",
            self.name,
            [cmd]
                .iter()
                .chain(args)
                .copied()
                .collect::<Vec<_>>()
                .join(" "),
            reply.cmd,
            reply.args
        );
        Ok(())
    }
}

/// Starts a forum server on UDP, runs two users' sessions through lossy relays and stops it.
pub(super) async fn demo() -> anyhow::Result<()> {
    println!(
        "== Forum (seed 001): commands over UDP on the reliable-datagram layer, files over TCP =="
    );
    let scratch = ScratchDir::new("forum")?;
    let data = scratch.path().join("data");
    let forum = tokio::task::spawn_blocking(move || Forum::open(&data, None)).await??;
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    let addr = socket.local_addr()?;
    let transfers = TcpListener::bind("127.0.0.1:0").await?;
    println!(
        "server on UDP {addr}, files over TCP port {}, data in {}",
        transfers.local_addr()?.port(),
        scratch.path().join("data").display()
    );
    let (stop, stopped) = oneshot::channel::<()>();
    let config = ServerConfig::new(Arc::new(forum));
    let server = tokio::spawn(forum_server::server::run(
        Transport::Udp(socket),
        transfers,
        config,
        async {
            let _ = stopped.await;
        },
    ));

    println!("-- the envelope of one command as it travels (bincode):");
    let envelope = Envelope::new("Yoda", "CRT", ["3331"]);
    println!("   CRT 3331 from Yoda = {}", show(&envelope.to_bytes()?));

    println!(
        "-- two users, each through a relay dropping {:.0}% and duplicating {:.0}% of datagrams:",
        IMPAIRMENT.loss * 100.0,
        IMPAIRMENT.duplication * 100.0
    );
    let mut yoda = User::log_in(addr, "Yoda", "jedi", 1).await?;
    let mut obi = User::log_in(addr, "Obi-wan", "kenobi", 2).await?;
    let mut twin = ForumClient::connect(addr, TransportKind::Udp, STEP_TIMEOUT).await?;
    let refused = twin.request(Cmd::User.as_str(), &["Yoda"]).await?;
    println!(
        "   {:<47} -> {} {:?}",
        "(another) user Yoda", refused.cmd, refused.args
    );
    twin.close().await;

    yoda.run("CRT", &["3331"]).await?;
    obi.run("CRT", &["3331"]).await?;
    obi.run("MSG", &["3331", "Hello there"]).await?;
    yoda.run("MSG", &["3331", "Do or do not, there is no try"])
        .await?;
    yoda.run("EDT", &["3331", "1", "Hello"]).await?;
    obi.run("EDT", &["3331", "1", "General Kenobi"]).await?;
    yoda.run("DLT", &["3331", "5"]).await?;
    obi.run("LST", &[]).await?;
    transfer_a_file(&mut obi, &mut yoda, scratch.path()).await?;
    yoda.run("RDT", &["3331"]).await?;
    obi.run("RMV", &["3331"]).await?;

    let thread = std::fs::read_to_string(scratch.path().join("data/threads/3331"))?;
    println!("-- the thread file data/threads/3331:");
    for line in thread.lines() {
        println!("   {line}");
    }

    println!("-- what the reliable layer did (client side) and what the relays did:");
    for user in [&yoda, &obi] {
        report(user);
    }
    let mut relays = Vec::new();
    for mut user in [yoda, obi] {
        user.run("XIT", &[]).await?;
        user.client.close().await;
        relays.push(user.relay); // until the server has had the last acks
    }

    let _ = stop.send(());
    timeout(STEP_TIMEOUT, server).await???;
    drop(relays);
    println!("server stopped, threads, uploads and accounts kept");
    Ok(())
}

/// UPD by `uploader`, DWN by `downloader`, the bytes compared.
async fn transfer_a_file(
    uploader: &mut User,
    downloader: &mut User,
    folder: &std::path::Path,
) -> anyhow::Result<()> {
    let body: Vec<u8> = (0..1_000_000u32).map(|i| (i ^ (i >> 9)) as u8).collect();
    let source = folder.join("lecture.pdf");
    std::fs::write(&source, &body)?;
    let verdict = uploader.client.upload("3331", &source, |_, _| {}).await?;
    println!(
        "   {:<8} {:<38} -> TCP-open, {} bytes sent: {verdict}",
        uploader.name,
        "UPD 3331 lecture.pdf",
        body.len()
    );
    let out = folder.join("downloads");
    std::fs::create_dir(&out)?;
    let saved = downloader
        .client
        .download("3331", "lecture.pdf", &out, |_, _| {})
        .await?;
    let same = std::fs::read(&saved).context("reading the download")? == body;
    println!(
        "   {:<8} {:<38} -> TCP-open, saved, {}",
        downloader.name,
        "DWN 3331 lecture.pdf",
        if same { "identical" } else { "DIFFERENT" }
    );
    let missing = downloader
        .client
        .download("3331", "missing.pdf", &out, |_, _| {})
        .await;
    match missing {
        Err(ClientError::Refused { status, reason }) => println!(
            "   {:<8} {:<38} -> {status} [{reason:?}]",
            downloader.name, "DWN 3331 missing.pdf"
        ),
        other => bail!("a download of a missing file gave {other:?}"),
    }
    if !same {
        bail!("the downloaded file differs from the uploaded one");
    }
    Ok(())
}

/// One line about a user's datagrams and relay.
fn report(user: &User) {
    let Some(stats) = user.client.reliable_stats() else {
        return;
    };
    println!(
        "   {:<8} sent {} datagrams, {} of them again; received {}, {} of them already had; \
         its relay dropped {} and duplicated {}",
        user.name,
        stats.datagrams_sent,
        stats.retransmissions,
        stats.datagrams_received,
        stats.duplicates_dropped,
        user.relay.dropped(),
        user.relay.duplicated()
    );
}
