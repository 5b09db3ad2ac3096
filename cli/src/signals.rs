//! Waiting for the operator to stop a server.

use std::io;

/// The signal that asked a server to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    /// Ctrl+C (SIGINT).
    Interrupt,
    /// SIGTERM (Unix only).
    Terminate,
}

/// Handlers for SIGINT and SIGTERM, installed when created, so a signal that arrives before the
/// server first waits is not lost (nor kills the process the default way).
pub struct StopSignals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl StopSignals {
    /// Installs the handlers. Must be called inside a tokio runtime.
    pub fn install() -> io::Result<StopSignals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(StopSignals {
                interrupt: signal(SignalKind::interrupt())?,
                terminate: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(StopSignals {})
        }
    }

    /// Completes with the first stop signal received.
    pub async fn recv(self) -> StopSignal {
        #[cfg(unix)]
        {
            let StopSignals {
                mut interrupt,
                mut terminate,
            } = self;
            tokio::select! {
                _ = interrupt.recv() => StopSignal::Interrupt,
                _ = terminate.recv() => StopSignal::Terminate,
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            StopSignal::Interrupt
        }
    }

    /// Completes on the first stop signal, whichever it was: a server's shutdown future.
    pub async fn shutdown(self) {
        self.recv().await;
    }
}
