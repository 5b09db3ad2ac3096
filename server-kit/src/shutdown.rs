//! Waiting for a server's connection tasks at shutdown.

use std::time::Duration;

use tokio::time::timeout;
use tokio_util::task::TaskTracker;
use tracing::warn;

/// Closes `tracker` to new tasks and waits up to `grace` for the running ones to finish.
/// Returns how many were still running when the grace period ran out (0 when all finished);
/// those are logged and left to be dropped with the runtime.
pub async fn drain(tracker: &TaskTracker, grace: Duration) -> usize {
    tracker.close();
    if timeout(grace, tracker.wait()).await.is_ok() {
        return 0;
    }
    let left = tracker.len();
    warn!(
        connections = left,
        ?grace,
        "connections still open after the shutdown grace period; dropping them"
    );
    left
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn finished_tasks_drain_and_stuck_ones_are_counted() {
        let tracker = TaskTracker::new();
        tracker.spawn(tokio::time::sleep(Duration::from_millis(10)));
        tracker.spawn(std::future::pending::<()>());
        assert_eq!(drain(&tracker, Duration::from_secs(1)).await, 1);

        let tracker = TaskTracker::new();
        tracker.spawn(tokio::time::sleep(Duration::from_millis(10)));
        assert_eq!(drain(&tracker, Duration::from_secs(1)).await, 0);
    }
}
