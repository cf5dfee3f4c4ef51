//! Host user and group ids for instances: one scheme for every runtime.
//!
//! The installation owns a range of host ids, from the `pier` lines of `/etc/subuid` and `/etc/subgid`
//! (as podman's `--userns=auto` takes the `containers` lines), or [`DEFAULT_START`]..+[`DEFAULT_COUNT`]
//! when they are missing (`pier doctor` prints the lines to add). The range is cut into blocks of
//! [`BLOCK`] ids, and every service owns one block for its whole life:
//!
//! - a container maps its ids `0..65536` onto the block (image root is the block's first id, an
//!   unprivileged host user: Kubernetes' `hostUsers: false`);
//! - a host process runs as the block's first id, with no capabilities.
//!
//! So two services never share a host id, an instance's processes are recognisable by their uid alone
//! (which they cannot change), and nothing an instance runs is the host's root.

use std::fmt;

/// Ids per service: a container's whole 16-bit id space.
pub const BLOCK: u32 = 65536;
/// First id of the range when `/etc/subuid` has no `pier` line (`0x70000000`, above systemd's
/// container range and below the ids 32-bit `uid_t` reserves).
pub const DEFAULT_START: u32 = 0x7000_0000;
/// Ids in the default range: 16384 blocks.
pub const DEFAULT_COUNT: u32 = 1 << 30;
/// The user whose subordinate ids Pier takes.
pub const SUBID_USER: &str = "pier";

/// Why the id range is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The line of a subordinate-id file cannot be read.
    #[error("{file}: the `pier` line {line:?} is not `pier:START:COUNT`")]
    Malformed {
        /// Which file.
        file: &'static str,
        /// The line.
        line: String,
    },
    /// The range is smaller than one block.
    #[error(
        "{file}: the `pier` range has {count} ids; it needs at least {BLOCK} (one per service is {BLOCK})"
    )]
    TooSmall {
        /// Which file.
        file: &'static str,
        /// Its count.
        count: u32,
    },
    /// The uid and gid ranges differ in size.
    #[error(
        "the `pier` ranges of /etc/subuid ({uids} ids) and /etc/subgid ({gids} ids) must be the same size"
    )]
    Mismatch {
        /// uids.
        uids: u32,
        /// gids.
        gids: u32,
    },
}

/// Where a range came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeSource {
    /// `/etc/subuid` and `/etc/subgid`.
    SubidFiles,
    /// Pier's default (the files have no `pier` line).
    Default,
    /// The server's command line.
    Configured,
}

/// The host ids this installation gives instances.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdRange {
    /// First uid.
    pub uid_start: u32,
    /// First gid.
    pub gid_start: u32,
    /// How many of each (a multiple of [`BLOCK`]; the remainder is unused).
    pub count: u32,
    /// Where it came from.
    pub source: RangeSource,
}

impl fmt::Display for IdRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "uids {}..{}, gids {}..{} ({} blocks)",
            self.uid_start,
            u64::from(self.uid_start) + u64::from(self.count),
            self.gid_start,
            u64::from(self.gid_start) + u64::from(self.count),
            self.blocks()
        )
    }
}

/// The `pier:START:COUNT` line of a subordinate-id file, if any.
fn subid_line(text: &str, file: &'static str) -> Result<Option<(u32, u32)>, IdError> {
    for line in text.lines().map(str::trim) {
        let mut parts = line.split(':');
        if parts.next() != Some(SUBID_USER) {
            continue;
        }
        let bad = || IdError::Malformed {
            file,
            line: line.to_owned(),
        };
        let start: u32 = parts.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
        let count: u32 = parts.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
        if parts.next().is_some() || start.checked_add(count).is_none() {
            return Err(bad());
        }
        if count < BLOCK {
            return Err(IdError::TooSmall { file, count });
        }
        return Ok(Some((start, count)));
    }
    Ok(None)
}

impl IdRange {
    /// The range from the texts of `/etc/subuid` and `/etc/subgid`, or the default when neither has a
    /// `pier` line.
    pub fn from_subid(subuid: &str, subgid: &str) -> Result<IdRange, IdError> {
        let u = subid_line(subuid, "/etc/subuid")?;
        let g = subid_line(subgid, "/etc/subgid")?;
        match (u, g) {
            (Some((us, uc)), Some((gs, gc))) => {
                if uc != gc {
                    return Err(IdError::Mismatch { uids: uc, gids: gc });
                }
                Ok(IdRange {
                    uid_start: us,
                    gid_start: gs,
                    count: uc,
                    source: RangeSource::SubidFiles,
                })
            }
            (Some((_, c)), None) | (None, Some((_, c))) => Err(IdError::Mismatch {
                uids: if u.is_some() { c } else { 0 },
                gids: if g.is_some() { c } else { 0 },
            }),
            (None, None) => Ok(IdRange::default_range()),
        }
    }

    /// Reads `/etc/subuid` and `/etc/subgid` (a missing file has no `pier` line).
    pub fn detect() -> Result<IdRange, IdError> {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        IdRange::from_subid(&read("/etc/subuid"), &read("/etc/subgid"))
    }

    /// Pier's default range.
    pub fn default_range() -> IdRange {
        IdRange {
            uid_start: DEFAULT_START,
            gid_start: DEFAULT_START,
            count: DEFAULT_COUNT,
            source: RangeSource::Default,
        }
    }

    /// The `pier` lines to add to `/etc/subuid` and `/etc/subgid` for this range.
    pub fn subid_lines(&self) -> (String, String) {
        (
            format!("{SUBID_USER}:{}:{}", self.uid_start, self.count),
            format!("{SUBID_USER}:{}:{}", self.gid_start, self.count),
        )
    }

    /// Number of service blocks.
    pub fn blocks(&self) -> u32 {
        self.count / BLOCK
    }

    /// Block `index`, if the range has it.
    pub fn block(&self, index: u32) -> Option<IdBlock> {
        (index < self.blocks()).then(|| IdBlock {
            index,
            uid: self.uid_start + index * BLOCK,
            gid: self.gid_start + index * BLOCK,
        })
    }
}

/// One service's ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IdBlock {
    /// The block's number in the range.
    pub index: u32,
    /// First host uid: a container's root, and the uid host processes run as.
    pub uid: u32,
    /// First host gid.
    pub gid: u32,
}

impl IdBlock {
    /// A user-namespace map line (`/proc/PID/uid_map` and OCI `uidMappings`): inside `0..65536` onto
    /// the block's uids.
    pub fn uid_map(&self) -> String {
        format!("0 {} {BLOCK}", self.uid)
    }

    /// The same for gids.
    pub fn gid_map(&self) -> String {
        format!("0 {} {BLOCK}", self.gid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_come_from_the_pier_lines() {
        let r = IdRange::from_subid(
            "alice:100000:65536\npier:200000000:655360\n",
            "pier:300000000:655360\n",
        )
        .unwrap();
        assert_eq!(r.source, RangeSource::SubidFiles);
        assert_eq!(r.blocks(), 10);
        let b = r.block(3).unwrap();
        assert_eq!(
            (b.uid, b.gid),
            (200_000_000 + 3 * BLOCK, 300_000_000 + 3 * BLOCK)
        );
        assert_eq!(b.uid_map(), format!("0 {} 65536", 200_000_000 + 3 * BLOCK));
        assert!(r.block(10).is_none());
        assert_eq!(
            r.subid_lines().0,
            "pier:200000000:655360",
            "doctor prints lines in the files' own form"
        );
    }

    #[test]
    fn missing_lines_fall_back_and_bad_lines_say_why() {
        let d = IdRange::from_subid("", "").unwrap();
        assert_eq!(d, IdRange::default_range());
        assert_eq!(d.blocks(), 16384);
        assert!(d.uid_start as u64 + d.count as u64 <= u32::MAX as u64);
        let e = IdRange::from_subid("pier:1:2:3", "").unwrap_err();
        assert!(e.to_string().contains("/etc/subuid"), "{e}");
        let e = IdRange::from_subid("pier:1000000:100", "pier:1000000:100").unwrap_err();
        assert!(e.to_string().contains("at least 65536"), "{e}");
        let e = IdRange::from_subid("pier:1000000:65536", "").unwrap_err();
        assert!(matches!(e, IdError::Mismatch { .. }), "{e}");
        let e = IdRange::from_subid("pier:4294967000:65536", "pier:1:65536").unwrap_err();
        assert!(matches!(e, IdError::Malformed { .. }), "overflow: {e}");
    }
}
