//! An idle timeout for a connection that waits for its socket many times a second.
//!
//! `tokio::time::timeout` around each read puts a timer into the runtime's timer wheel and takes
//! it out again on every wait, under the wheel's lock. [`IdleTimer`] keeps one timer per
//! connection instead: each wait only notes its deadline (a clock read), and the timer, when it
//! fires early because the connection was busy meanwhile, is moved to the latest deadline. A busy
//! connection so touches the wheel about once per timeout period, not once per request.

use std::pin::Pin;
use std::time::Duration;

use tokio::time::{Instant, Sleep, sleep_until};

/// One connection's idle timeout: [`IdleTimer::restart`] when it starts waiting for the peer,
/// then race [`IdleTimer::expired`] against the read.
#[derive(Debug)]
pub struct IdleTimer {
    timeout: Duration,
    deadline: Instant,
    sleep: Pin<Box<Sleep>>,
}

impl IdleTimer {
    /// A timer that expires `timeout` after now, or after the last [`IdleTimer::restart`].
    pub fn new(timeout: Duration) -> IdleTimer {
        let deadline = Instant::now() + timeout;
        IdleTimer {
            timeout,
            deadline,
            sleep: Box::pin(sleep_until(deadline)),
        }
    }

    /// Starts the timeout again from now (the connection begins to wait).
    pub fn restart(&mut self) {
        self.deadline = Instant::now() + self.timeout;
    }

    /// Completes once `timeout` has passed since the last restart (or since the timer was
    /// made). Cancel-safe: dropping it and calling again waits for the same deadline.
    pub async fn expired(&mut self) {
        // Deadlines only move later, so the timer has expired once it fired at the last one.
        loop {
            self.sleep.as_mut().await;
            if self.sleep.deadline() >= self.deadline {
                return;
            }
            self.sleep.as_mut().reset(self.deadline);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn expires_a_timeout_after_the_last_restart() {
        let timeout = Duration::from_secs(60);
        let started = Instant::now();
        let mut idle = IdleTimer::new(timeout);
        tokio::time::sleep(Duration::from_secs(45)).await;
        idle.restart();
        tokio::time::sleep(Duration::from_secs(30)).await;
        idle.restart();
        idle.expired().await;
        assert_eq!(started.elapsed(), Duration::from_secs(45 + 30 + 60));
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_restart_it_expires_a_timeout_after_it_was_made() {
        let started = Instant::now();
        let mut idle = IdleTimer::new(Duration::from_secs(5));
        idle.expired().await;
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        idle.expired().await;
        assert_eq!(started.elapsed(), Duration::from_secs(5), "still expired");
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_dropped_early_resumes_towards_the_same_deadline() {
        let started = Instant::now();
        let mut idle = IdleTimer::new(Duration::from_secs(10));
        let cut_short = tokio::time::timeout(Duration::from_secs(4), idle.expired()).await;
        assert!(cut_short.is_err(), "not expired after 4 s");
        idle.expired().await;
        assert_eq!(started.elapsed(), Duration::from_secs(10));
    }
}
