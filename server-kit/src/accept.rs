//! The accept loop under a connection limit.
//!
//! A server serves at most [`ConnectionLimit::max`] connections at once. What happens to one more
//! is the server's choice: [`accept_waiting`] stops accepting until a slot frees, so newcomers
//! wait in the kernel's accept queue; [`accept_refusing`] accepts them anyway and hands them to a
//! refusal handler (which typically says "server full" and closes), itself bounded so that a
//! flood of connections cannot grow the number of tasks without limit.
//!
//! Every accepted socket gets `TCP_NODELAY` (servers batch their own writes). A failed accept
//! (out of file descriptors, a connection reset before it was accepted) is logged and retried
//! after a pause that doubles up to one second, instead of stopping the server or spinning.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::sleep;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

/// Refusals that may be in progress at once in [`accept_refusing`]; connections beyond them are
/// closed without an answer.
pub const MAX_PENDING_REFUSALS: usize = 64;

const FIRST_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// How many connections a server serves at once, and how many it is serving now.
#[derive(Debug, Clone)]
pub struct ConnectionLimit {
    slots: Arc<Semaphore>,
    max: usize,
}

impl ConnectionLimit {
    /// A limit of `max` connections (at least one).
    pub fn new(max: usize) -> ConnectionLimit {
        let max = max.max(1);
        ConnectionLimit {
            slots: Arc::new(Semaphore::new(max)),
            max,
        }
    }

    /// The most connections served at once.
    pub fn max(&self) -> usize {
        self.max
    }

    /// The connections being served now.
    pub fn in_use(&self) -> usize {
        self.max - self.slots.available_permits()
    }
}

/// Accepts forever, serving each connection with `serve` in a task of `tracker` that holds one
/// slot of `limit`; while every slot is taken it does not accept at all.
pub async fn accept_waiting<S, F>(
    listener: &TcpListener,
    limit: &ConnectionLimit,
    tracker: &TaskTracker,
    mut serve: S,
) where
    S: FnMut(TcpStream, SocketAddr) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let mut backoff = FIRST_BACKOFF;
    loop {
        let slot = Arc::clone(&limit.slots)
            .acquire_owned()
            .await
            .expect("the connection semaphore is never closed");
        let (stream, peer) = accept_one(listener, &mut backoff).await;
        let task = serve(stream, peer);
        tracker.spawn(async move {
            task.await;
            drop(slot);
        });
    }
}

/// Accepts forever, serving each connection with `serve` in a task of `tracker` that holds one
/// slot of `limit`; a connection that finds every slot taken goes to `refuse` instead, in a task
/// of its own. At most [`MAX_PENDING_REFUSALS`] refusals run at once; past that, connections are
/// closed as soon as they are accepted.
pub async fn accept_refusing<S, F, R, G>(
    listener: &TcpListener,
    limit: &ConnectionLimit,
    tracker: &TaskTracker,
    mut serve: S,
    mut refuse: R,
) where
    S: FnMut(TcpStream, SocketAddr) -> F,
    F: Future<Output = ()> + Send + 'static,
    R: FnMut(TcpStream, SocketAddr) -> G,
    G: Future<Output = ()> + Send + 'static,
{
    let refusals = Arc::new(Semaphore::new(MAX_PENDING_REFUSALS));
    let mut backoff = FIRST_BACKOFF;
    loop {
        let (stream, peer) = accept_one(listener, &mut backoff).await;
        if let Ok(slot) = Arc::clone(&limit.slots).try_acquire_owned() {
            let task = serve(stream, peer);
            tracker.spawn(async move {
                task.await;
                drop(slot);
            });
        } else if let Ok(refusal) = Arc::clone(&refusals).try_acquire_owned() {
            let task = refuse(stream, peer);
            tracker.spawn(async move {
                task.await;
                drop(refusal);
            });
        } else {
            warn!(%peer, "server full and too many refusals pending; closing without an answer");
        }
    }
}

/// The next connection, with `TCP_NODELAY` set; failures are logged and retried with back-off.
async fn accept_one(listener: &TcpListener, backoff: &mut Duration) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                *backoff = FIRST_BACKOFF;
                if let Err(err) = stream.set_nodelay(true) {
                    debug!(%peer, error = %err, "could not disable Nagle's algorithm");
                }
                return (stream, peer);
            }
            Err(err) => {
                warn!(error = %err, retry_in = ?*backoff, "accept failed");
                sleep(*backoff).await;
                *backoff = (*backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listen_on;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::Notify;
    use tokio::time::timeout;

    const PATIENCE: Duration = Duration::from_secs(10);

    async fn read_all(mut stream: TcpStream) -> Vec<u8> {
        let mut buf = Vec::new();
        timeout(PATIENCE, stream.read_to_end(&mut buf))
            .await
            .unwrap()
            .unwrap();
        buf
    }

    /// A server that answers "served" and holds the connection until `release` is notified, and
    /// answers "full" to connections over the limit.
    fn start_refusing(limit: ConnectionLimit, release: Arc<Notify>) -> std::net::SocketAddr {
        let listener = listen_on(([127, 0, 0, 1], 0).into()).unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let tracker = TaskTracker::new();
            accept_refusing(
                &listener,
                &limit,
                &tracker,
                |mut stream, _| {
                    let release = Arc::clone(&release);
                    async move {
                        stream.write_all(b"served").await.unwrap();
                        release.notified().await;
                    }
                },
                |mut stream, _| async move {
                    stream.write_all(b"full").await.unwrap();
                },
            )
            .await;
        });
        addr
    }

    #[tokio::test]
    async fn connections_over_the_limit_are_refused_and_the_others_kept() {
        let limit = ConnectionLimit::new(2);
        let release = Arc::new(Notify::new());
        let addr = start_refusing(limit.clone(), Arc::clone(&release));
        let mut first = TcpStream::connect(addr).await.unwrap();
        let mut second = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0; 6];
        first.read_exact(&mut buf).await.unwrap();
        second.read_exact(&mut buf).await.unwrap();
        assert_eq!(limit.in_use(), 2);

        let third = TcpStream::connect(addr).await.unwrap();
        assert_eq!(read_all(third).await, b"full");
        assert_eq!(limit.in_use(), 2, "a refusal takes no slot");

        release.notify_one();
        drop(first);
        // The freed slot serves the next connection.
        let fourth = loop {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            let mut buf = [0; 4];
            stream.read_exact(&mut buf).await.unwrap();
            if &buf == b"serv" {
                break stream;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        drop((second, fourth));
    }

    #[tokio::test]
    async fn connections_over_the_limit_wait_for_a_slot() {
        let listener = listen_on(([127, 0, 0, 1], 0).into()).unwrap();
        let addr = listener.local_addr().unwrap();
        let limit = ConnectionLimit::new(1);
        tokio::spawn({
            let limit = limit.clone();
            async move {
                let tracker = TaskTracker::new();
                accept_waiting(&listener, &limit, &tracker, |mut stream, _| async move {
                    stream.write_all(b"hi").await.unwrap();
                    let mut rest = Vec::new();
                    let _ = stream.read_to_end(&mut rest).await;
                })
                .await;
            }
        });
        let mut first = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0; 2];
        first.read_exact(&mut buf).await.unwrap();
        let mut second = TcpStream::connect(addr).await.unwrap();
        assert!(
            timeout(Duration::from_millis(200), second.read_exact(&mut buf))
                .await
                .is_err(),
            "the second connection must wait while the first holds the only slot"
        );
        drop(first);
        timeout(PATIENCE, second.read_exact(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf, b"hi");
    }
}
