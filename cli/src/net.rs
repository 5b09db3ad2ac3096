//! Binding server sockets.

use std::net::SocketAddr;

use anyhow::Context;
use tokio::net::{TcpListener, TcpSocket, lookup_host};

/// Pending connections the kernel queues before the server accepts them. The standard library's
/// 128 overflows when a few hundred clients connect at once, and a client whose handshake
/// overflowed the queue waits through seconds of SYN-ACK retransmission back-off.
pub const LISTEN_BACKLOG: u32 = 1024;

/// A listener on `host:port` with a [`LISTEN_BACKLOG`]-deep accept queue and `SO_REUSEADDR`, so a
/// restarted server can bind again at once.
pub async fn listen(host: &str, port: u16) -> anyhow::Result<TcpListener> {
    let addr: SocketAddr = lookup_host((host, port))
        .await
        .with_context(|| format!("cannot resolve {host}"))?
        .next()
        .with_context(|| format!("{host} has no address"))?;
    let bind = || -> std::io::Result<TcpListener> {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(LISTEN_BACKLOG)
    };
    bind().with_context(|| format!("cannot listen on {addr}"))
}
