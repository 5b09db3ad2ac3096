//! The bare TCP echo server the load benchmarks compare a server with, and its workload.
//!
//! The server does the least a TCP request/response server can: it accepts, turns Nagle's
//! algorithm off as every server of the workspace does, and for each connection reads what
//! arrived into a buffer and writes it back. It runs in-process on the same kind of runtime as
//! the server it is compared with ([`InProcessServer`]). Its workload ([`Exchanges::echoed`])
//! sends exactly the requests of the target's workload and reads back as many bytes, checking
//! they are the same, so both sides move the same requests through the same load generator.

use std::sync::Arc;

use std::io;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::load::{Exchanges, InProcessServer, Shutdown};

/// Bytes the echo server reads at once per connection.
const ECHO_BUFFER: usize = 4 * 1024;

/// Starts the echo server on 127.0.0.1, on a port the system picks.
pub fn start() -> anyhow::Result<InProcessServer> {
    InProcessServer::tcp("echo", serve)
}

/// Accepts and echoes until `shutdown` completes.
async fn serve(listener: TcpListener, shutdown: Shutdown) -> io::Result<()> {
    let accepting = async {
        loop {
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            tokio::spawn(echo(stream));
        }
    };
    tokio::select! {
        () = shutdown => Ok(()),
        failed = accepting => failed,
    }
}

/// Writes back whatever arrives until the peer closes (or the connection fails).
async fn echo(mut stream: TcpStream) {
    let mut buffer = vec![0; ECHO_BUFFER];
    loop {
        let read = match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        if stream.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}

/// Starts the echo server for `workload`: the server, and the same requests echoed.
pub fn alongside(workload: &Exchanges) -> anyhow::Result<(InProcessServer, Arc<Exchanges>)> {
    Ok((start()?, Arc::new(workload.echoed())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::bench::load::{Exchange, measure_round};
    use crate::commands::runtime;
    use std::time::Duration;

    fn exchange(request: &[u8], answer: &[u8]) -> Exchange {
        Exchange {
            what: "a test".into(),
            request: request.to_vec(),
            answer: answer.to_vec(),
        }
    }

    #[test]
    fn the_echo_answers_every_request_with_its_own_bytes() {
        let requests = Exchanges::rotating(vec![exchange(b"one", b"!"), exchange(b"three", b"?")]);
        let (server, echoed) = alongside(&requests).unwrap();
        let round = runtime()
            .unwrap()
            .block_on(measure_round(
                &echoed,
                server.addr(),
                3,
                4,
                Duration::from_millis(200),
            ))
            .unwrap();
        assert_eq!(round.tally.errors, 0, "{:?}", round.tally.first_error);
        assert!(round.tally.completed > 100, "{}", round.tally.completed);
        server.stop().unwrap();
    }

    #[test]
    fn answers_other_than_expected_are_errors() {
        let requests = Exchanges::rotating(vec![exchange(b"one", b"!")]);
        let server = start().unwrap();
        let round = runtime()
            .unwrap()
            .block_on(measure_round(
                &Arc::new(requests),
                server.addr(),
                2,
                3,
                Duration::from_millis(100),
            ))
            .unwrap();
        assert_eq!(round.tally.completed, 0);
        assert_eq!(
            round.tally.errors, 6,
            "every request in flight on both connections"
        );
        let why = round.tally.first_error.unwrap();
        assert!(why.contains(r#"a test: expected "!", got "one"#), "{why}");
    }
}
