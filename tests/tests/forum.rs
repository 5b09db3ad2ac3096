//! The forum (seed 001) over real sockets, over TCP and over UDP (also through relays that drop
//! and duplicate datagrams): two users' concurrent sessions, ownership checks, a 2 MB upload and
//! download over the side channel, the thread files' exact content, double log-in, the idle
//! timeout, garbage datagrams.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use forum_server::Forum;
use forum_server::channel::{EnvelopeChannel, TcpChannel, UdpChannel};
use forum_server::server::{ServerConfig, Transport, run};
use forum_server::transfer::{read_status, receive_body, send_file, token_from_hex};
use integration_tests::PATIENCE;
use protocol::forum::Envelope;
use protocol::reliable::Config as ReliableConfig;
use server_kit::lossy_relay::{Impairment, LossyRelay};
use server_kit::reliable_udp::ReliableConnection;
use tempfile::TempDir;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::timeout;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Tcp,
    Udp,
    /// UDP through relays (one per client) dropping 20% of datagrams both ways and
    /// duplicating 5% of the rest.
    LossyUdp,
}

/// What the relays of [`Kind::LossyUdp`] do.
const IMPAIRMENT: Impairment = Impairment {
    loss: 0.2,
    duplication: 0.05,
};

struct ForumServer {
    dir: TempDir,
    addr: SocketAddr,
    kind: Kind,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl ForumServer {
    async fn start(kind: Kind, adjust: impl FnOnce(&mut ServerConfig)) -> ForumServer {
        let dir = tempfile::tempdir().unwrap();
        let forum = Forum::open(dir.path(), Some("sekrit".into())).unwrap();
        let mut config = ServerConfig::new(Arc::new(
            forum.with_failure_delay(Duration::from_millis(10)),
        ));
        config.reliable = reliable_config();
        adjust(&mut config);
        let transfers = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (transport, addr) = match kind {
            Kind::Tcp => {
                let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
                let addr = listener.local_addr().unwrap();
                (Transport::Tcp(listener), addr)
            }
            Kind::Udp | Kind::LossyUdp => {
                let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
                let addr = socket.local_addr().unwrap();
                (Transport::Udp(socket), addr)
            }
        };
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(run(transport, transfers, config, async {
            let _ = stopped.await;
        }));
        ForumServer {
            dir,
            addr,
            kind,
            stop: Some(stop),
            task,
        }
    }

    async fn client(&self) -> Client {
        let relay = match self.kind {
            Kind::LossyUdp => Some(
                LossyRelay::start_with(self.addr, IMPAIRMENT, next_seed())
                    .await
                    .unwrap(),
            ),
            _ => None,
        };
        let channel: Box<dyn Channel> = match self.kind {
            Kind::Tcp => Box::new(TcpChannel::new(
                TcpStream::connect(self.addr).await.unwrap(),
            )),
            Kind::Udp | Kind::LossyUdp => {
                let target = relay.as_ref().map_or(self.addr, LossyRelay::local_addr);
                let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
                let connection = ReliableConnection::connect(socket, target, reliable_config())
                    .await
                    .unwrap();
                Box::new(UdpChannel(connection))
            }
        };
        Client {
            channel,
            user: String::new(),
            relay,
        }
    }

    async fn stop(mut self) -> TempDir {
        let _ = self.stop.take().unwrap().send(());
        timeout(PATIENCE, &mut self.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        self.dir
    }
}

/// A fresh seed for each relay, so that runs repeat but clients' relays differ.
fn next_seed() -> u64 {
    static SEED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(7);
    SEED.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

fn reliable_config() -> ReliableConfig {
    ReliableConfig {
        min_rto: Duration::from_millis(10),
        max_rto: Duration::from_millis(200),
        ..ReliableConfig::default()
    }
}

/// An object-safe view of the two channels, for the test's client.
trait Channel: Send {
    fn exchange<'a>(
        &'a mut self,
        envelope: Envelope,
    ) -> std::pin::Pin<Box<dyn Future<Output = Envelope> + Send + 'a>>;
    fn next<'a>(
        &'a mut self,
    ) -> std::pin::Pin<Box<dyn Future<Output = Option<Envelope>> + Send + 'a>>;
}

impl<C: EnvelopeChannel> Channel for C {
    fn exchange<'a>(
        &'a mut self,
        envelope: Envelope,
    ) -> std::pin::Pin<Box<dyn Future<Output = Envelope> + Send + 'a>> {
        Box::pin(async move {
            self.send(&envelope).await.unwrap();
            timeout(PATIENCE, self.recv())
                .await
                .unwrap()
                .unwrap()
                .expect("a reply")
        })
    }

    fn next<'a>(
        &'a mut self,
    ) -> std::pin::Pin<Box<dyn Future<Output = Option<Envelope>> + Send + 'a>> {
        Box::pin(async move { timeout(PATIENCE, self.recv()).await.unwrap().unwrap() })
    }
}

struct Client {
    channel: Box<dyn Channel>,
    user: String,
    /// This client's own relay, for [`Kind::LossyUdp`].
    relay: Option<LossyRelay>,
}

impl Client {
    /// Sends `cmd args` and returns the reply's (cmd, args).
    async fn say(&mut self, cmd: &str, args: &[&str]) -> (String, Vec<String>) {
        let envelope = Envelope::new(self.user.as_str(), cmd, args.iter().copied());
        let reply = self.channel.exchange(envelope).await;
        (reply.cmd, reply.args)
    }

    async fn log_in(&mut self, user: &str, password: &str) {
        let (step, _) = self.say("user", &[user]).await;
        let (cmd, args) = self.say(&step, &[password]).await;
        assert_eq!(cmd, "done", "{args:?}");
        self.user = user.to_owned();
    }
}

async fn upload(
    server: &ForumServer,
    client: &mut Client,
    title: &str,
    path: &std::path::Path,
) -> Result<String, String> {
    let name = path.file_name().unwrap().to_str().unwrap();
    let (cmd, args) = client.say("UPD", &[title, name]).await;
    assert_eq!(cmd, "TCP-open", "{args:?}");
    let mut side = side_channel(server, &args).await;
    send_file(&mut side, path, PATIENCE, |_, _| {})
        .await
        .unwrap();
    read_status(&mut side, PATIENCE).await.unwrap()
}

async fn side_channel(server: &ForumServer, args: &[String]) -> TcpStream {
    let port: u16 = args[0].parse().unwrap();
    let token = token_from_hex(&args[1]).unwrap();
    let mut side = TcpStream::connect((server.addr.ip(), port)).await.unwrap();
    side.write_all(&token).await.unwrap();
    side
}

async fn two_users_session(kind: Kind) {
    let server = ForumServer::start(kind, |_| {}).await;
    let mut yoda = server.client().await;
    let mut obi = server.client().await;
    yoda.log_in("Yoda", "jedi").await;
    obi.log_in("Obi-wan", "kenobi").await;

    let mut again = server.client().await;
    assert_eq!(
        again.say("user", &["Yoda"]).await,
        ("user".into(), vec!["Yoda is already logged in".into()])
    );

    assert_eq!(yoda.say("CRT", &["3331"]).await.0, "done");
    assert_eq!(obi.say("CRT", &["3331"]).await.1, ["Thread 3331 exists"]);
    assert_eq!(obi.say("MSG", &["3331", "Hello there"]).await.0, "done");
    assert_eq!(yoda.say("MSG", &["3331", "Do or do not"]).await.0, "done");
    assert_eq!(
        yoda.say("EDT", &["3331", "1", "mine"]).await.1,
        ["The message belongs to another user and cannot be edited"]
    );
    assert_eq!(
        obi.say("EDT", &["3331", "1", "General Kenobi"]).await.0,
        "done"
    );
    assert_eq!(yoda.say("DLT", &["3331", "3"]).await.0, "no-msg");
    assert_eq!(yoda.say("LST", &[]).await.1, ["3331"]);

    // Obi-wan uploads 2 MB while Yoda works on a thread of his own.
    let dir = tempfile::tempdir().unwrap();
    let body: Vec<u8> = (0..2_000_000u32).map(|i| (i ^ (i >> 8)) as u8).collect();
    let source = dir.path().join("big.bin");
    std::fs::write(&source, &body).unwrap();
    let (uploaded, ()) = tokio::join!(upload(&server, &mut obi, "3331", &source), async {
        assert_eq!(yoda.say("CRT", &["dagobah"]).await.0, "done");
        for text in ["Mudhole?", "Slimy?", "My home this is!"] {
            assert_eq!(yoda.say("MSG", &["dagobah", text]).await.0, "done");
        }
        assert_eq!(yoda.say("DLT", &["dagobah", "2"]).await.0, "done");
        assert_eq!(
            yoda.say("LST", &[]).await.1,
            ["3331", "dagobah"],
            "listed in order"
        );
    });
    assert_eq!(uploaded.unwrap(), "big.bin uploaded to 3331 thread");
    assert_eq!(obi.say("UPD", &["3331", "big.bin"]).await.0, "file-error");
    assert_eq!(
        obi.say("DLT", &["dagobah", "1"]).await.1,
        ["The message belongs to another user and cannot be deleted"]
    );

    let (cmd, args) = yoda.say("DWN", &["3331", "big.bin"]).await;
    assert_eq!(cmd, "TCP-open");
    let mut side = side_channel(&server, &args).await;
    let copy = dir.path().join("copy.bin");
    receive_body(&mut side, &copy, u64::MAX, PATIENCE, |_, _| {})
        .await
        .unwrap();
    assert!(
        std::fs::read(&copy).unwrap() == body,
        "downloaded bytes equal"
    );

    let (cmd, lines) = yoda.say("RDT", &["3331"]).await;
    assert_eq!(cmd, "done");
    assert_eq!(
        lines,
        [
            "1 Obi-wan: General Kenobi",
            "2 Yoda: Do or do not",
            "Obi-wan uploaded big.bin"
        ]
    );
    let file = std::fs::read_to_string(server.dir.path().join("threads/3331")).unwrap();
    assert_eq!(
        file,
        "Yoda\n1 Obi-wan: General Kenobi\n2 Yoda: Do or do not\nObi-wan uploaded big.bin\n"
    );
    let file = std::fs::read_to_string(server.dir.path().join("threads/dagobah")).unwrap();
    assert_eq!(file, "Yoda\n1 Yoda: Mudhole?\n2 Yoda: My home this is!\n");
    assert_eq!(obi.say("RMV", &["3331"]).await.0, "error");
    assert_eq!(yoda.say("RMV", &["dagobah"]).await.0, "done");
    assert!(!server.dir.path().join("threads/dagobah").exists());
    assert_eq!(yoda.say("XIT", &[]).await.0, "done");
    assert_eq!(
        again.say("user", &["Yoda"]).await.0,
        "pw",
        "free again after XIT"
    );
    if kind == Kind::LossyUdp {
        let relays: Vec<&LossyRelay> = [&yoda, &obi, &again]
            .iter()
            .map(|client| client.relay.as_ref().unwrap())
            .collect();
        let dropped: u64 = relays.iter().map(|relay| relay.dropped()).sum();
        let duplicated: u64 = relays.iter().map(|relay| relay.duplicated()).sum();
        assert!(dropped > 0 && duplicated > 0, "{relays:?}");
    }
    drop((yoda, obi, again));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_over_tcp() {
    two_users_session(Kind::Tcp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_over_udp() {
    two_users_session(Kind::Udp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_over_udp_through_relays_dropping_a_fifth_and_duplicating() {
    two_users_session(Kind::LossyUdp).await;
}

#[tokio::test]
async fn a_restart_keeps_threads_uploads_and_accounts() {
    let server = ForumServer::start(Kind::Tcp, |_| {}).await;
    let mut yoda = server.client().await;
    yoda.log_in("Yoda", "jedi").await;
    yoda.say("CRT", &["3331"]).await;
    yoda.say("MSG", &["3331", "kept"]).await;
    let scratch = tempfile::tempdir().unwrap();
    let source = scratch.path().join("notes.txt");
    std::fs::write(&source, b"notes").unwrap();
    upload(&server, &mut yoda, "3331", &source).await.unwrap();
    drop(yoda);
    let dir = server.stop().await;

    let forum = Forum::open(dir.path(), None).unwrap();
    assert_eq!(
        forum.store().read("3331").unwrap(),
        ["1 Yoda: kept", "Yoda uploaded notes.txt"]
    );
    assert!(forum.accounts().verify("Yoda", "jedi").await.unwrap());
    assert!(forum.store().download_path("3331", "notes.txt").is_ok());
}

#[tokio::test]
async fn an_idle_session_is_ended_and_the_client_told_at_once() {
    for kind in [Kind::Tcp, Kind::Udp] {
        let server = ForumServer::start(kind, |config| {
            config.idle_timeout = Duration::from_millis(300)
        })
        .await;
        let mut yoda = server.client().await;
        yoda.log_in("Yoda", "jedi").await;
        let notice = yoda.channel.next().await.expect("a notice before the end");
        assert_eq!(notice.cmd, "XIT");
        assert_eq!(
            notice.args,
            ["Session ended after 300 ms without a command"].map(String::from)
        );
        server.stop().await;
    }
}

#[tokio::test]
async fn sht_tells_every_client_and_stops_the_server() {
    let server = ForumServer::start(Kind::Tcp, |_| {}).await;
    let mut yoda = server.client().await;
    let mut obi = server.client().await;
    yoda.log_in("Yoda", "jedi").await;
    obi.log_in("Obi-wan", "kenobi").await;
    assert_eq!(
        yoda.say("SHT", &["wrong"]).await.1,
        ["Wrong admin password"]
    );
    assert_eq!(yoda.say("SHT", &["sekrit"]).await.0, "done");
    let notice = obi.channel.next().await.expect("told");
    assert_eq!(notice.cmd, "SHT");
    assert_eq!(notice.args, ["The server is shutting down (Yoda asked)"]);
    let ForumServer { task, .. } = server;
    timeout(PATIENCE, task).await.unwrap().unwrap().unwrap();
}

#[tokio::test]
async fn garbage_datagrams_do_no_harm() {
    let server = ForumServer::start(Kind::Udp, |_| {}).await;
    let junk = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for size in [0usize, 1, 31, 32, 100, 1500] {
        let bytes: Vec<u8> = (0..size).map(|i| (i * 31 + 7) as u8).collect();
        junk.send_to(&bytes, server.addr).await.unwrap();
    }
    let mut forged = b"RD\x01\x02".to_vec();
    forged.resize(40, 0);
    junk.send_to(&forged, server.addr).await.unwrap();
    let mut yoda = server.client().await;
    yoda.log_in("Yoda", "jedi").await;
    assert_eq!(yoda.say("LST", &[]).await.1, ["No threads to list"]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_library_logs_in_transfers_and_hears_the_idle_notice() {
    use forum_server::client::{ClientError, ForumClient, TransportKind};
    for (kind, transport) in [
        (Kind::Udp, TransportKind::Udp),
        (Kind::Tcp, TransportKind::Tcp),
    ] {
        let server =
            ForumServer::start(kind, |config| config.idle_timeout = Duration::from_secs(1)).await;
        let mut client = ForumClient::connect(server.addr, transport, PATIENCE)
            .await
            .unwrap();
        assert_eq!(
            client.request("user", &["Yoda"]).await.unwrap().cmd,
            "newPw"
        );
        assert_eq!(
            client.request("newPw", &["jedi"]).await.unwrap().cmd,
            "done"
        );
        client.set_user("Yoda");
        client.request("CRT", &["3331"]).await.unwrap();

        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("report.pdf");
        std::fs::write(&source, vec![7u8; 300_000]).unwrap();
        let mut seen = (0, 0);
        let verdict = client
            .upload("3331", &source, |sent, size| seen = (sent, size))
            .await
            .unwrap();
        assert_eq!(verdict, "report.pdf uploaded to 3331 thread");
        assert_eq!(seen, (300_000, 300_000), "progress reported to the end");
        let refused = client.upload("9999", &source, |_, _| {}).await.unwrap_err();
        assert!(
            matches!(&refused, ClientError::Refused { status, .. } if status == "no-thread"),
            "{refused}"
        );

        let out = tempfile::tempdir().unwrap();
        let mut seen = (0, 0);
        let saved = client
            .download("3331", "report.pdf", out.path(), |got, size| {
                seen = (got, size)
            })
            .await
            .unwrap();
        assert_eq!(std::fs::read(saved).unwrap(), vec![7u8; 300_000]);
        assert_eq!(seen, (300_000, 300_000), "progress reported to the end");
        let missing = client
            .download("3331", "nope.pdf", out.path(), |_, _| {})
            .await
            .unwrap_err();
        assert_eq!(
            missing.to_string(),
            "File nope.pdf does not exist in thread 3331"
        );
        assert_eq!(
            std::fs::read_dir(out.path()).unwrap().count(),
            1,
            "no partial file left"
        );

        let ended = timeout(PATIENCE, client.ended()).await.unwrap();
        assert_eq!(
            ended.to_string(),
            "Session ended after 1 s without a command",
            "{kind:?}"
        );
        server.stop().await;
    }
}

#[tokio::test]
async fn password_guesses_are_answered_ever_more_slowly_even_from_new_sessions() {
    let server = ForumServer::start(Kind::Tcp, |_| {}).await;
    let mut luke = server.client().await;
    luke.log_in("Luke", "force").await;
    luke.say("XIT", &[]).await;
    let mut yoda = server.client().await;
    yoda.log_in("Yoda", "jedi").await;
    let started = tokio::time::Instant::now();
    for _ in 0..4 {
        // A new session for each guess: the count is the account's, not the session's.
        let mut guesser = server.client().await;
        assert_eq!(guesser.say("user", &["Luke"]).await.0, "pw");
        let (cmd, args) = guesser.say("pw", &["sith"]).await;
        assert_eq!(
            (cmd.as_str(), args),
            ("user", vec!["Invalid password".to_owned()])
        );
    }
    // The harness's base pause is 10 ms, doubled per failure: 10 + 20 + 40 + 80.
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert_eq!(yoda.say("LST", &[]).await.1, ["No threads to list"]);
    server.stop().await;
}
