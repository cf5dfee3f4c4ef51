//! Watches what the machine has left for the server: free space and inodes of the data dir's
//! filesystem, and the server's open descriptors against its limit. Crossing a threshold is logged once
//! as a warning, and once more when it is over; `pier doctor` reports the same figures.

use std::path::PathBuf;
use std::time::Duration;

use pier_control::machine;

/// How often the figures are read.
const EVERY: Duration = Duration::from_secs(30);
/// Warn above this share of the descriptor limit in use (percent).
const DESCRIPTORS_PERCENT: u64 = 80;

/// Runs until the server stops.
pub async fn run(data_dir: PathBuf) {
    let (mut low_space, mut low_fds) = (false, false);
    loop {
        match machine::low_space(&data_dir) {
            Some(w) if !low_space => {
                tracing::warn!("{w}");
                low_space = true;
            }
            None if low_space => {
                tracing::info!("the data dir's filesystem has room again");
                low_space = false;
            }
            _ => {}
        }
        let (open, limit) = machine::descriptors();
        let high = limit > 0 && open * 100 / limit >= DESCRIPTORS_PERCENT;
        if high && !low_fds {
            tracing::warn!(
                "{open} of {limit} descriptors in use: new connections and instances fail at the limit; raise it (LimitNOFILE=, ulimit -n)"
            );
        } else if !high && low_fds {
            tracing::info!("descriptors in use are back to {open} of {limit}");
        }
        low_fds = high;
        tokio::time::sleep(EVERY).await;
    }
}
