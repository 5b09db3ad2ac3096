//! The client side of a TCP connection, as every client of the workspace opens it.

use std::io;
use std::time::Duration;

use tokio::net::{TcpStream, ToSocketAddrs};
use tokio::time::timeout;

/// Connects to `addr`, giving up after `patience` (an error of kind `TimedOut`), with
/// `TCP_NODELAY` set: the clients batch their own writes, and a request must not wait for an
/// earlier one's ack.
pub async fn connect(addr: impl ToSocketAddrs, patience: Duration) -> io::Result<TcpStream> {
    let stream = timeout(patience, TcpStream::connect(addr))
        .await
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer within {patience:?}"),
            )
        })??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connects_with_nodelay_or_says_why_not() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stream = connect(addr, Duration::from_secs(5)).await.unwrap();
        assert!(stream.nodelay().unwrap());
        drop(listener);
        let refused = connect(addr, Duration::from_secs(5)).await.unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
    }
}
