//! The user a container runs as, from the image's `User` (`uid`, `uid:gid`, `name`, `name:group`),
//! resolved in the image's own `/etc/passwd` and `/etc/group`. Those files are opened with
//! `RESOLVE_IN_ROOT`, so an image whose `/etc/passwd` is a symlink to a host path reads its own tree, never
//! the host's.

use std::io::Read;
use std::path::Path;

use rustix::fs::{Mode, OFlags, ResolveFlags};

use crate::bundle::User;

/// Reads a small file inside `root` as the container would see it.
pub fn read_in_root(root: &Path, path: &str) -> std::io::Result<String> {
    let dir = rustix::fs::open(
        root,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let fd = rustix::fs::openat2(
        &dir,
        path.trim_start_matches('/'),
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )?;
    let mut text = String::new();
    std::fs::File::from(fd)
        .take(4 << 20)
        .read_to_string(&mut text)?;
    Ok(text)
}

/// Resolves the image's user spec against the files of `root`.
pub fn resolve(root: &Path, spec: Option<&str>) -> Result<User, String> {
    let spec = spec.map(str::trim).unwrap_or("");
    if spec.is_empty() {
        let passwd = read_in_root(root, "/etc/passwd").unwrap_or_default();
        let home = find_passwd(&passwd, |_, uid| uid == 0)
            .map(|e| e.home)
            .unwrap_or_else(|| "/root".into());
        return Ok(User {
            home,
            additional_gids: supplementary(root, "root", 0),
            ..User::default()
        });
    }
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = read_in_root(root, "/etc/passwd").unwrap_or_default();
    let entry = match user_part.parse::<u32>() {
        Ok(uid) => find_passwd(&passwd, |_, u| u == uid).or(Some(PasswdEntry {
            name: String::new(),
            uid,
            gid: 0,
            home: "/".into(),
        })),
        Err(_) => find_passwd(&passwd, |name, _| name == user_part),
    }
    .ok_or_else(|| {
        format!(
            "the image's user {user_part:?} is not in its /etc/passwd: use a numeric uid in USER"
        )
    })?;
    let gid = match group_part {
        None => entry.gid,
        Some(g) => {
            match g.parse::<u32>() {
                Ok(gid) => gid,
                Err(_) => {
                    let group = read_in_root(root, "/etc/group").unwrap_or_default();
                    group
                    .lines()
                    .filter_map(parse_group)
                    .find(|(name, _, _)| name == g)
                    .map(|(_, gid, _)| gid)
                    .ok_or_else(|| {
                        format!("the image's group {g:?} is not in its /etc/group: use a numeric gid")
                    })?
                }
            }
        }
    };
    let additional_gids = if entry.name.is_empty() || group_part.is_some() {
        Vec::new()
    } else {
        supplementary(root, &entry.name, gid)
    };
    Ok(User {
        uid: entry.uid,
        gid,
        additional_gids,
        home: entry.home,
    })
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

fn find_passwd(text: &str, pred: impl Fn(&str, u32) -> bool) -> Option<PasswdEntry> {
    text.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 7 {
            return None;
        }
        let uid = f[2].parse().ok()?;
        let gid = f[3].parse().ok()?;
        pred(f[0], uid).then(|| PasswdEntry {
            name: f[0].to_owned(),
            uid,
            gid,
            home: if f[5].is_empty() { "/" } else { f[5] }.to_owned(),
        })
    })
}

fn parse_group(line: &str) -> Option<(String, u32, Vec<String>)> {
    let f: Vec<&str> = line.split(':').collect();
    if f.len() < 4 {
        return None;
    }
    let members = f[3]
        .split(',')
        .filter(|m| !m.is_empty())
        .map(str::to_owned)
        .collect();
    Some((f[0].to_owned(), f[2].parse().ok()?, members))
}

/// Groups that list `user` as a member, besides its primary `gid`.
fn supplementary(root: &Path, user: &str, gid: u32) -> Vec<u32> {
    let group = read_in_root(root, "/etc/group").unwrap_or_default();
    let mut out: Vec<u32> = group
        .lines()
        .filter_map(parse_group)
        .filter(|(_, g, members)| *g != gid && members.iter().any(|m| m == user))
        .map(|(_, g, _)| g)
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root_with(passwd: &str, group: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/passwd"), passwd).unwrap();
        std::fs::write(dir.path().join("etc/group"), group).unwrap();
        dir
    }

    #[test]
    fn resolves_names_numbers_and_groups() {
        let root = root_with(
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
            "root:x:0:\napp:x:1000:\nwww:x:33:app\nstaff:x:50:\n",
        );
        let app = resolve(root.path(), Some("app")).unwrap();
        assert_eq!((app.uid, app.gid), (1000, 1000));
        assert_eq!(app.additional_gids, vec![33]);
        assert_eq!(app.home, "/home/app");
        let pair = resolve(root.path(), Some("app:staff")).unwrap();
        assert_eq!((pair.uid, pair.gid), (1000, 50));
        let numeric = resolve(root.path(), Some("4242:4243")).unwrap();
        assert_eq!((numeric.uid, numeric.gid), (4242, 4243));
        let default = resolve(root.path(), None).unwrap();
        assert_eq!((default.uid, default.home.as_str()), (0, "/root"));
        assert!(
            resolve(root.path(), Some("nobody"))
                .unwrap_err()
                .contains("nobody")
        );
        assert!(resolve(root.path(), Some("app:nogroup")).is_err());
    }

    #[test]
    fn a_symlinked_passwd_reads_inside_the_image() {
        // /etc/passwd -> /etc/host-passwd-target (absolute): must resolve inside the root.
        let root = root_with("", "");
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("passwd"), "evil:x:0:0::/:/bin/sh\n").unwrap();
        std::fs::remove_file(root.path().join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink(
            outside.path().join("passwd"),
            root.path().join("etc/passwd"),
        )
        .unwrap();
        assert!(resolve(root.path(), Some("evil")).is_err());
        // And a relative escape clamps at the root.
        std::fs::remove_file(root.path().join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink(
            "../../../../../../etc/passwd",
            root.path().join("etc/passwd"),
        )
        .unwrap();
        assert!(resolve(root.path(), Some("root")).is_err());
    }
}
