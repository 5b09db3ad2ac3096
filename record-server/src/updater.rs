//! The periodic timestamp updater of the seed: every `UPDATE_TIMER` seconds, each record whose
//! timestamp in the record file is more than `UPDATE_TRESH` seconds old gets a fresh
//! `Last updated:` line and index entry. It finds them from the index (the record file's content),
//! never by opening every record, and prints the seed's lines as it goes.

use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior, interval_at};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::record_id::RecordId;
use crate::store::{RecordStore, Restamp};
use crate::timestamp::Timestamp;

/// Runs [`update_once`] every `every` until `cancel` fires. A pass in progress when it fires is
/// finished first.
pub async fn run_updater(
    store: RecordStore,
    every: Duration,
    threshold: Duration,
    cancel: CancellationToken,
) {
    let mut ticks = interval_at(Instant::now() + every, every);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = ticks.tick() => {}
        }
        update_once(&store, threshold).await;
    }
}

/// One pass: restamps every record older than `threshold`, saves the index once, and returns
/// the ids it updated.
pub async fn update_once(store: &RecordStore, threshold: Duration) -> Vec<RecordId> {
    info!("Updating files...");
    let now = Timestamp::now();
    let mut updated = Vec::new();
    for id in store.stale(threshold, now) {
        match store.restamp(&id, threshold, now).await {
            Ok(Restamp::Updated) => {
                info!("File of client {id} updated");
                updated.push(id);
            }
            Ok(Restamp::Fresh) => {}
            Ok(Restamp::Vanished) => {
                warn!("The file of client {id} has vanished; its record is dropped.");
            }
            Err(err) => error!("Could not update the file of client {id}: {err}"),
        }
    }
    if let Err(err) = store.save().await {
        error!("Could not save the record file: {err}");
    }
    info!("Files updated.");
    updated
}
