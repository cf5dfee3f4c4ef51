//! Watches what the machine has left for the server: free space and inodes of the data dir's
//! filesystem, and the server's open descriptors against its limit. Crossing a threshold is logged once
//! as a warning, and once more when it is over; `pier doctor` reports the same figures.

use std::path::PathBuf;
use std::time::Duration;

use pier_control::machine;

/// How often the figures are read.
pub const EVERY: Duration = Duration::from_secs(30);
/// Warn above this share of the descriptor limit in use (percent).
const DESCRIPTORS_PERCENT: u64 = 80;

/// What was last reported, so each crossing is logged once.
pub struct Watch {
    data_dir: PathBuf,
    low_space: bool,
    low_fds: bool,
}

impl Watch {
    /// Watches the filesystem of `data_dir` and the server's descriptors.
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            data_dir,
            low_space: false,
            low_fds: false,
        }
    }

    /// Reads the figures once; logs a crossing of a mark, either way.
    pub fn check(&mut self) {
        match machine::low_space(&self.data_dir) {
            Some(w) if !self.low_space => {
                tracing::warn!("{w}");
                self.low_space = true;
            }
            None if self.low_space => {
                tracing::info!("the data dir's filesystem has room again");
                self.low_space = false;
            }
            _ => {}
        }
        let (open, limit) = machine::descriptors();
        let high = limit > 0 && open * 100 / limit >= DESCRIPTORS_PERCENT;
        if high && !self.low_fds {
            tracing::warn!(
                "{open} of {limit} descriptors in use: new connections and instances fail at the limit; raise it (LimitNOFILE=, ulimit -n)"
            );
        } else if !high && self.low_fds {
            tracing::info!("descriptors in use are back to {open} of {limit}");
        }
        self.low_fds = high;
    }
}
