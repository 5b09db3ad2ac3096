//! Binding server sockets.

use std::io;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket, lookup_host};

/// Pending connections the kernel queues before the server accepts them. The standard library's
/// 128 overflows when a few hundred clients connect at once, and a client whose handshake
/// overflowed the queue waits through seconds of SYN-ACK retransmission back-off.
pub const LISTEN_BACKLOG: u32 = 1024;

/// A listener on `addr` with a [`LISTEN_BACKLOG`]-deep accept queue and `SO_REUSEADDR`, so a
/// restarted server can bind again at once. Must be called inside a tokio runtime.
pub fn listen_on(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Resolves `host` (a name such as `localhost` or an address) and listens on its first address
/// with [`listen_on`]. Errors name the host or the address.
pub async fn listen(host: &str, port: u16) -> io::Result<TcpListener> {
    let addr = lookup_host((host, port))
        .await
        .map_err(|err| io::Error::new(err.kind(), format!("cannot resolve {host}: {err}")))?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{host} has no address")))?;
    listen_on(addr)
        .map_err(|err| io::Error::new(err.kind(), format!("cannot listen on {addr}: {err}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_port_is_reusable_at_once_after_the_listener_closes() {
        let first = listen("127.0.0.1", 0).await.unwrap();
        let addr = first.local_addr().unwrap();
        let client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = first.accept().await.unwrap();
        drop(accepted); // the server side closes first: its port enters TIME_WAIT
        drop(client);
        drop(first);
        let again = listen_on(addr).unwrap();
        assert_eq!(again.local_addr().unwrap(), addr);
    }

    #[tokio::test]
    async fn an_unresolvable_host_is_named_in_the_error() {
        let err = listen("no-such-host.invalid", 0).await.unwrap_err();
        assert!(err.to_string().contains("no-such-host.invalid"), "{err}");
    }
}
