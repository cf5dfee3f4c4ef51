//! Tests for layer unpacking: crafted (often hostile) tars built from raw headers, checked against a
//! "host" directory beside the destination that must never change. They run as root (chown, trusted
//! xattrs).

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tar::{EntryType, Header};

use super::*;

/// Builds tars from raw headers, so names the tar crate would refuse (`..`, absolute) can be written.
struct Tar {
    builder: tar::Builder<Vec<u8>>,
    pax: Vec<(String, Vec<u8>)>,
}

impl Tar {
    fn new() -> Self {
        Tar {
            builder: tar::Builder::new(Vec::new()),
            pax: Vec::new(),
        }
    }

    fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.raw(name.as_bytes(), EntryType::Regular, b"", data, |_| {})
    }

    fn dir(&mut self, name: &str) -> &mut Self {
        self.raw(name.as_bytes(), EntryType::Directory, b"", b"", |_| {})
    }

    fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.raw(
            name.as_bytes(),
            EntryType::Symlink,
            target.as_bytes(),
            b"",
            |_| {},
        )
    }

    fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.raw(
            name.as_bytes(),
            EntryType::Link,
            target.as_bytes(),
            b"",
            |_| {},
        )
    }

    /// An xattr for the next entry, as a PAX `SCHILY.xattr.` record.
    fn xattr(&mut self, name: &str, value: &[u8]) -> &mut Self {
        self.pax
            .push((format!("SCHILY.xattr.{name}"), value.to_vec()));
        self
    }

    fn raw(
        &mut self,
        name: &[u8],
        kind: EntryType,
        link: &[u8],
        data: &[u8],
        edit: impl FnOnce(&mut Header),
    ) -> &mut Self {
        if name.len() > 100 {
            self.pax.push(("path".to_owned(), name.to_vec()));
        }
        if link.len() > 100 {
            self.pax.push(("linkpath".to_owned(), link.to_vec()));
        }
        if !self.pax.is_empty() {
            let records = std::mem::take(&mut self.pax);
            self.builder
                .append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                .unwrap();
        }
        let mut header = Header::new_gnu();
        let old = header.as_old_mut();
        old.name[..name.len().min(100)].copy_from_slice(&name[..name.len().min(100)]);
        old.linkname[..link.len().min(100)].copy_from_slice(&link[..link.len().min(100)]);
        header.set_entry_type(kind);
        header.set_size(data.len() as u64);
        header.set_mode(if kind == EntryType::Directory {
            0o755
        } else {
            0o644
        });
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(1_700_000_000);
        edit(&mut header);
        header.set_cksum();
        self.builder.append(&header, data).unwrap();
        self
    }

    fn finish(&mut self) -> Vec<u8> {
        let builder = std::mem::replace(&mut self.builder, tar::Builder::new(Vec::new()));
        builder.into_inner().unwrap()
    }
}

/// A temp dir holding `dest` (unpacked into) and `host` (stands for the rest of the machine).
struct Fixture {
    _tmp: tempfile::TempDir,
    top: PathBuf,
    dest: PathBuf,
    host: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let top = tmp.path().to_path_buf();
        let dest = top.join("dest");
        let host = top.join("host");
        fs::create_dir(&dest).unwrap();
        fs::create_dir(&host).unwrap();
        fs::write(host.join("file"), "host data").unwrap();
        fs::write(host.join("victim"), "victim data").unwrap();
        Fixture {
            _tmp: tmp,
            top,
            dest,
            host,
        }
    }

    fn unpack(&self, tar: &[u8], mode: UnpackMode) -> Result<UnpackReport, UnpackError> {
        unpack_layer(tar, Compression::None, &self.dest, mode)
    }

    fn host_str(&self) -> &str {
        self.host.to_str().unwrap()
    }

    /// `host` inside `dest`, where an absolute symlink to the host lands.
    fn host_in_dest(&self) -> PathBuf {
        self.dest.join(self.host.strip_prefix("/").unwrap())
    }

    fn assert_host_untouched(&self) {
        assert_eq!(names(&self.top), ["dest", "host"]);
        assert_eq!(names(&self.host), ["file", "victim"]);
        for (name, data) in [("file", "host data"), ("victim", "victim data")] {
            let path = self.host.join(name);
            let meta = fs::symlink_metadata(&path).unwrap();
            assert!(meta.is_file(), "{name} is still a file");
            assert_eq!(meta.nlink(), 1, "{name} link count");
            assert_eq!(meta.uid(), 0);
            assert_eq!(fs::read_to_string(&path).unwrap(), data);
        }
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn get_xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0; 256];
    let n = rustix::fs::lgetxattr(path, name, &mut buf[..]).ok()?;
    buf.truncate(n);
    Some(buf)
}

/// Everything under `dir`: relative path to (type, mode, owner, content or link target).
fn tree(dir: &Path) -> BTreeMap<PathBuf, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            let what = if meta.is_dir() {
                walk(root, &path, out);
                "dir".to_owned()
            } else if meta.file_type().is_symlink() {
                format!("link {}", fs::read_link(&path).unwrap().display())
            } else {
                format!("file {:?}", fs::read(&path).unwrap())
            };
            let desc = format!("{what} {:o} {}:{}", meta.mode(), meta.uid(), meta.gid());
            out.insert(path.strip_prefix(root).unwrap().to_path_buf(), desc);
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

#[test]
fn parent_dir_components_are_refused() {
    for name in ["../evil", "a/../../evil", "./../evil", "a/.."] {
        let fx = Fixture::new();
        let tar = Tar::new().file("ok", b"fine").file(name, b"pwned").finish();
        let err = fx.unpack(&tar, UnpackMode::Flatten).unwrap_err();
        assert!(
            matches!(&err, UnpackError::Escape { entry } if entry == name),
            "{err}"
        );
        assert!(err.to_string().contains(name), "{err}");
        fx.assert_host_untouched();
    }
}

#[test]
fn absolute_paths_land_under_dest() {
    let fx = Fixture::new();
    let tar = Tar::new()
        .file("/abs/file", b"data")
        .file("//./abs//two", b"2")
        .finish();
    fx.unpack(&tar, UnpackMode::Overlay).unwrap();
    assert_eq!(fs::read(fx.dest.join("abs/file")).unwrap(), b"data");
    assert_eq!(fs::read(fx.dest.join("abs/two")).unwrap(), b"2");
    let abs = fs::metadata(fx.dest.join("abs")).unwrap();
    assert_eq!(abs.mode() & 0o7777, 0o755);
    assert_eq!((abs.uid(), abs.gid()), (0, 0));
    fx.assert_host_untouched();
}

#[test]
fn absolute_symlink_parent_is_resolved_inside_dest() {
    let fx = Fixture::new();
    let tar = Tar::new()
        .symlink("link", fx.host_str())
        .file("link/pwned", b"pwned")
        .file("link/file", b"overwritten?")
        .finish();
    fx.unpack(&tar, UnpackMode::Flatten).unwrap();
    fx.assert_host_untouched();
    assert_eq!(fs::read_link(fx.dest.join("link")).unwrap(), fx.host);
    assert_eq!(fs::read(fx.host_in_dest().join("pwned")).unwrap(), b"pwned");
    assert_eq!(
        fs::read(fx.host_in_dest().join("file")).unwrap(),
        b"overwritten?"
    );
}

#[test]
fn relative_symlink_parent_is_clamped_at_dest() {
    let fx = Fixture::new();
    let tar = Tar::new()
        .symlink("up", "../../../..")
        .file("up/pwned", b"1")
        .dir("sub")
        .symlink("sub/up2", "../../host")
        .file("sub/up2/victim", b"2")
        .symlink("dots", "./sub/../../../host/.")
        .file("dots/file", b"3")
        .finish();
    fx.unpack(&tar, UnpackMode::Flatten).unwrap();
    fx.assert_host_untouched();
    assert_eq!(fs::read(fx.dest.join("pwned")).unwrap(), b"1");
    assert_eq!(fs::read(fx.dest.join("host/victim")).unwrap(), b"2");
    assert_eq!(fs::read(fx.dest.join("host/file")).unwrap(), b"3");
}

#[test]
fn symlink_loops_fail() {
    let fx = Fixture::new();
    let tar = Tar::new()
        .symlink("a", "b")
        .symlink("b", "a")
        .file("a/x", b"")
        .finish();
    let err = fx.unpack(&tar, UnpackMode::Flatten).unwrap_err();
    assert!(
        err.to_string()
            .contains("too many levels of symbolic links"),
        "{err}"
    );
    fx.assert_host_untouched();
}

#[test]
fn overly_deep_paths_fail() {
    let fx = Fixture::new();
    let ok = format!("{}f", "d/".repeat(MAX_DEPTH));
    let too_deep = format!("{}f", "d/".repeat(MAX_DEPTH + 1));
    let tar = Tar::new().file(&ok, b"").file(&too_deep, b"").finish();
    let err = fx.unpack(&tar, UnpackMode::Flatten).unwrap_err();
    assert!(err.to_string().contains("path is too deep"), "{err}");
    // The deepest tree allowed can still be whited out.
    let tar = Tar::new().file(".wh.d", b"").finish();
    fx.unpack(&tar, UnpackMode::Flatten).unwrap();
    assert!(names(&fx.dest).is_empty());
}

#[test]
fn path_through_a_file_fails() {
    let fx = Fixture::new();
    let tar = Tar::new().file("f", b"").file("f/x", b"").finish();
    let err = fx.unpack(&tar, UnpackMode::Flatten).unwrap_err();
    assert!(
        matches!(&err, UnpackError::Invalid { entry, .. } if entry == "f/x"),
        "{err}"
    );
}

#[test]
fn hardlinks_cannot_reach_outside() {
    let fx = Fixture::new();
    let relative = Tar::new().hardlink("h", "../../host/file").finish();
    let err = fx.unpack(&relative, UnpackMode::Flatten).unwrap_err();
    assert!(matches!(err, UnpackError::BadLink { .. }), "{err}");
    assert!(err.to_string().contains("../../host/file"), "{err}");

    let absolute = Tar::new()
        .hardlink("h", &format!("{}/file", fx.host_str()))
        .finish();
    let err = fx.unpack(&absolute, UnpackMode::Flatten).unwrap_err();
    assert!(matches!(err, UnpackError::BadLink { .. }), "{err}");

    let via_symlink = Tar::new()
        .symlink("l", fx.host_str())
        .hardlink("h", "l/file")
        .finish();
    let err = fx.unpack(&via_symlink, UnpackMode::Flatten).unwrap_err();
    assert!(matches!(err, UnpackError::BadLink { .. }), "{err}");

    assert!(!fx.dest.join("h").exists());
    fx.assert_host_untouched();
}

#[test]
fn hardlinks_to_directories_fail_and_to_files_work() {
    let fx = Fixture::new();
    let tar = Tar::new().dir("d").hardlink("h", "d").finish();
    let err = fx.unpack(&tar, UnpackMode::Flatten).unwrap_err();
    assert!(err.to_string().contains("it is a directory"), "{err}");

    let tar = Tar::new()
        .file("d/f", b"shared")
        .hardlink("h", "/d/f")
        .hardlink("h", "d/f")
        .finish();
    fx.unpack(&tar, UnpackMode::Flatten).unwrap();
    let a = fs::metadata(fx.dest.join("d/f")).unwrap();
    let b = fs::metadata(fx.dest.join("h")).unwrap();
    assert_eq!((a.ino(), a.nlink()), (b.ino(), 2));
}

#[test]
fn final_symlinks_are_replaced_not_followed() {
    let fx = Fixture::new();
    let host_file = format!("{}/file", fx.host_str());
    let tar = Tar::new()
        .symlink("s", &host_file)
        .file("s", b"replaced")
        .symlink("t", &host_file)
        .hardlink("h", "t")
        .symlink("d", fx.host_str())
        .dir("d")
        .finish();
    fx.unpack(&tar, UnpackMode::Flatten).unwrap();
    fx.assert_host_untouched();
    let s = fs::symlink_metadata(fx.dest.join("s")).unwrap();
    assert!(s.is_file());
    assert_eq!(fs::read(fx.dest.join("s")).unwrap(), b"replaced");
    let t = fs::symlink_metadata(fx.dest.join("t")).unwrap();
    let h = fs::symlink_metadata(fx.dest.join("h")).unwrap();
    assert!(h.file_type().is_symlink());
    assert_eq!((h.ino(), h.nlink()), (t.ino(), 2));
    assert!(fs::symlink_metadata(fx.dest.join("d")).unwrap().is_dir());
}

#[test]
fn entries_replace_directories_and_directories_replace_entries() {
    let fx = Fixture::new();
    let lower = Tar::new()
        .file("d/inner/x", b"x")
        .file("f", b"file")
        .dir("keep")
        .file("keep/child", b"c")
        .finish();
    fx.unpack(&lower, UnpackMode::Flatten).unwrap();
    let upper = Tar::new()
        .file("d", b"now a file")
        .dir("f")
        .raw(b"keep", EntryType::Directory, b"", b"", |h| {
            h.set_mode(0o700)
        })
        .finish();
    fx.unpack(&upper, UnpackMode::Flatten).unwrap();
    assert_eq!(fs::read(fx.dest.join("d")).unwrap(), b"now a file");
    assert!(fs::metadata(fx.dest.join("f")).unwrap().is_dir());
    assert_eq!(fs::read(fx.dest.join("keep/child")).unwrap(), b"c");
    let keep = fs::metadata(fx.dest.join("keep")).unwrap();
    assert_eq!(keep.mode() & 0o7777, 0o700);
}

#[test]
fn device_nodes_are_skipped() {
    let fx = Fixture::new();
    let tar = Tar::new()
        .raw(b"dev/null", EntryType::Char, b"", b"", |h| {
            h.set_device_major(1).unwrap();
            h.set_device_minor(3).unwrap();
        })
        .raw(b"dev/sda", EntryType::Block, b"", b"", |h| {
            h.set_device_major(8).unwrap();
            h.set_device_minor(0).unwrap();
        })
        .raw(b"foo", EntryType::Char, b"", b"", |_| {})
        .finish();
    let report = fx.unpack(&tar, UnpackMode::Overlay).unwrap();
    assert!(!fx.dest.join("dev/null").exists());
    assert!(!fx.dest.join("dev/sda").exists());
    assert!(fs::symlink_metadata(fx.dest.join("foo")).is_err());
    assert_eq!(report.entries, 3);
    assert_eq!(report.skipped.len(), 3, "{:?}", report.skipped);
    assert!(report.skipped[0].contains("dev/null"));
    assert!(report.skipped[1].contains("block device"));
}

#[test]
fn overlay_mode_whiteouts() {
    let fx = Fixture::new();
    let tar = Tar::new()
        .file(".wh.foo", b"")
        .dir("dir")
        .file("dir/.wh..wh..opq", b"")
        .file("dir/keep", b"k")
        .file("other/.wh..wh..opq", b"")
        .dir("other")
        .file(".wh..wh.plnk", b"")
        .xattr("trusted.overlay.opaque", b"y")
        .xattr("user.note", b"hi")
        .xattr("security.selinux", b"system_u")
        .xattr("user.overlay.opaque", b"y")
        .dir("fake")
        .finish();
    let report = fx.unpack(&tar, UnpackMode::Overlay).unwrap();

    let foo = fs::symlink_metadata(fx.dest.join("foo")).unwrap();
    assert!(foo.file_type().is_char_device());
    assert_eq!(foo.rdev(), 0);
    assert!(!fx.dest.join(".wh.foo").exists());
    assert_eq!(
        get_xattr(&fx.dest.join("dir"), OVERLAY_OPAQUE_XATTR).unwrap(),
        b"y"
    );
    assert_eq!(fs::read(fx.dest.join("dir/keep")).unwrap(), b"k");
    assert!(!fx.dest.join("dir/.wh..wh..opq").exists());
    assert_eq!(
        get_xattr(&fx.dest.join("other"), OVERLAY_OPAQUE_XATTR).unwrap(),
        b"y"
    );
    assert!(!fx.dest.join(".wh..wh.plnk").exists());
    assert!(!fx.dest.join("plnk").exists());

    let fake = fx.dest.join("fake");
    assert_eq!(get_xattr(&fake, OVERLAY_OPAQUE_XATTR), None);
    assert_eq!(get_xattr(&fake, "security.selinux"), None);
    assert_eq!(get_xattr(&fake, "user.overlay.opaque"), None);
    assert_eq!(get_xattr(&fake, "user.note").unwrap(), b"hi");
    assert_eq!(report.skipped.len(), 3, "{:?}", report.skipped);
    assert!(report.skipped[0].contains("trusted.overlay.opaque"));
    assert_eq!(names(&fx.dest), ["dir", "fake", "foo", "other"]);
}

#[test]
fn whiteouts_naming_nothing_fail() {
    for name in [".wh.", "a/.wh..", "a/.wh.", ".wh../"] {
        let fx = Fixture::new();
        let tar = Tar::new().file(name, b"").finish();
        let err = fx.unpack(&tar, UnpackMode::Flatten).unwrap_err();
        assert!(
            matches!(&err, UnpackError::Invalid { entry, .. } if entry == name),
            "{err}"
        );
    }
    // `...` is an ordinary, if odd, name.
    let fx = Fixture::new();
    fx.unpack(
        &Tar::new().file("...", b"").file(".wh....", b"").finish(),
        UnpackMode::Flatten,
    )
    .unwrap();
    assert!(!fx.dest.join("...").exists());
}

#[test]
fn flatten_mode_applies_whiteouts_to_lower_layers() {
    let fx = Fixture::new();
    let lower = Tar::new()
        .file("foo/a/b", b"b")
        .file("dir/old", b"old")
        .file("dir/rewritten", b"lower")
        .file("dir/sub/lower", b"lower")
        .file("dir/deep/er/x", b"x")
        .file("other/stays", b"s")
        .symlink("lnk", fx.host_str())
        .finish();
    fx.unpack(&lower, UnpackMode::Flatten).unwrap();

    let upper = Tar::new()
        .file(".wh.foo", b"")
        .file("dir/before", b"before")
        .file("dir/rewritten", b"upper")
        .dir("dir/sub")
        .file("dir/.wh..wh..opq", b"")
        .file("dir/after", b"after")
        .file("lnk/.wh.victim", b"")
        .file("missing/.wh.x", b"")
        .finish();
    fx.unpack(&upper, UnpackMode::Flatten).unwrap();

    fx.assert_host_untouched();
    assert!(!fx.dest.join("foo").exists());
    assert_eq!(
        names(&fx.dest.join("dir")),
        ["after", "before", "rewritten", "sub"]
    );
    assert_eq!(fs::read(fx.dest.join("dir/rewritten")).unwrap(), b"upper");
    assert!(names(&fx.dest.join("dir/sub")).is_empty());
    assert_eq!(fs::read(fx.dest.join("other/stays")).unwrap(), b"s");
    assert!(!fx.dest.join("missing").exists());
}

#[test]
fn flatten_whiteout_under_symlink_to_host_keeps_host_files() {
    let fx = Fixture::new();
    // The whited-out name exists inside dest too, where the symlink really leads.
    let tar = Tar::new()
        .symlink("lnk", fx.host_str())
        .file("lnk/victim", b"inside")
        .finish();
    fx.unpack(&tar, UnpackMode::Flatten).unwrap();
    let tar = Tar::new().file("lnk/.wh.victim", b"").finish();
    fx.unpack(&tar, UnpackMode::Flatten).unwrap();
    fx.assert_host_untouched();
    assert!(!fx.host_in_dest().join("victim").exists());
}

#[test]
fn modes_ownership_and_times_are_kept() {
    let fx = Fixture::new();
    let tar = Tar::new()
        .raw(b"bin/su", EntryType::Regular, b"", b"#!", |h| {
            h.set_mode(0o4755);
            h.set_uid(1234);
            h.set_gid(5678);
            h.set_mtime(1_234_567_890);
        })
        .raw(b"private", EntryType::Directory, b"", b"", |h| {
            h.set_mode(0o700);
            h.set_uid(42);
        })
        .raw(b"tmp", EntryType::Directory, b"", b"", |h| {
            h.set_mode(0o1777)
        })
        .raw(b"sgid", EntryType::Directory, b"", b"", |h| {
            h.set_mode(0o2775);
            h.set_gid(100);
        })
        .file("sgid/implicit/f", b"")
        .raw(b"ln", EntryType::Symlink, b"bin/su", b"", |h| {
            h.set_uid(7);
            h.set_gid(8);
        })
        .raw(b"fifo", EntryType::Fifo, b"", b"", |h| {
            h.set_mode(0o640);
            h.set_uid(9);
        })
        .raw(b"./", EntryType::Directory, b"", b"", |h| h.set_mode(0o751))
        .finish();
    fx.unpack(&tar, UnpackMode::Overlay).unwrap();

    let su = fs::symlink_metadata(fx.dest.join("bin/su")).unwrap();
    assert_eq!(su.mode() & 0o7777, 0o4755);
    assert_eq!((su.uid(), su.gid()), (1234, 5678));
    assert_eq!(su.mtime(), 1_234_567_890);
    let private = fs::symlink_metadata(fx.dest.join("private")).unwrap();
    assert_eq!(private.mode() & 0o7777, 0o700);
    assert_eq!(private.uid(), 42);
    let tmp = fs::symlink_metadata(fx.dest.join("tmp")).unwrap();
    assert_eq!(tmp.mode() & 0o7777, 0o1777);
    let implicit = fs::symlink_metadata(fx.dest.join("sgid/implicit")).unwrap();
    assert_eq!(implicit.mode() & 0o7777, 0o755);
    assert_eq!((implicit.uid(), implicit.gid()), (0, 0));
    let ln = fs::symlink_metadata(fx.dest.join("ln")).unwrap();
    assert!(ln.file_type().is_symlink());
    assert_eq!((ln.uid(), ln.gid()), (7, 8));
    let fifo = fs::symlink_metadata(fx.dest.join("fifo")).unwrap();
    assert!(fifo.file_type().is_fifo());
    assert_eq!(fifo.mode() & 0o7777, 0o640);
    assert_eq!(fifo.uid(), 9);
    let root = fs::metadata(&fx.dest).unwrap();
    assert_eq!(root.permissions().mode() & 0o7777, 0o751);
}

#[test]
fn pax_long_names_ids_and_capabilities() {
    let fx = Fixture::new();
    let long = format!("{}/file", "d".repeat(150));
    let long_target = format!("/{}", "t".repeat(150));
    // A VFS_CAP_REVISION_2 capability set granting cap_net_bind_service.
    let mut cap = vec![0; 20];
    cap[..4].copy_from_slice(&0x0200_0001_u32.to_le_bytes());
    cap[4..8].copy_from_slice(&(1_u32 << 10).to_le_bytes());
    let mut tar = Tar::new();
    tar.pax.push(("uid".to_owned(), b"3000000".to_vec()));
    let tar = tar
        .xattr("security.capability", &cap)
        .file(&long, b"long")
        .symlink("short", &long_target)
        .hardlink("hl", &long)
        .finish();
    let report = fx.unpack(&tar, UnpackMode::Overlay).unwrap();
    assert_eq!(report.entries, 3);
    assert_eq!(report.bytes, 4);
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    let path = fx.dest.join(&long);
    assert_eq!(fs::read(&path).unwrap(), b"long");
    assert_eq!(fs::metadata(&path).unwrap().uid(), 3_000_000);
    assert_eq!(get_xattr(&path, "security.capability").unwrap(), cap);
    assert_eq!(
        fs::read_link(fx.dest.join("short")).unwrap(),
        Path::new(&long_target)
    );
    assert_eq!(fs::metadata(fx.dest.join("hl")).unwrap().nlink(), 2);
}

#[test]
fn compressed_layers_unpack_identically() {
    let tar = Tar::new()
        .dir("etc")
        .file("etc/hostname", b"pier\n")
        .symlink("etc/link", "hostname")
        .file("big", &vec![7; 300_000])
        .finish();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).unwrap();
    let gz = gz.finish().unwrap();
    let zst = zstd::encode_all(&tar[..], 3).unwrap();
    assert_eq!(Compression::sniff(&tar), Compression::None);
    assert_eq!(Compression::sniff(&gz), Compression::Gzip);
    assert_eq!(Compression::sniff(&zst), Compression::Zstd);

    let mut trees = Vec::new();
    for (bytes, compression) in [
        (&tar, Compression::None),
        (&gz, Compression::Gzip),
        (&zst, Compression::Zstd),
    ] {
        let fx = Fixture::new();
        let report = unpack_layer(&bytes[..], compression, &fx.dest, UnpackMode::Overlay).unwrap();
        assert_eq!((report.entries, report.bytes), (4, 300_005));
        trees.push(tree(&fx.dest));
    }
    assert_eq!(trees[0].len(), 4);
    assert_eq!(trees[0], trees[1]);
    assert_eq!(trees[0], trees[2]);
}

#[test]
fn a_decompression_bomb_stops_at_the_limit_before_the_file_is_written() {
    // 64 MiB of zeros gzip to about 64 KiB.
    let tar = Tar::new()
        .file("small", b"fine\n")
        .file("bomb", &vec![0; 64 << 20])
        .finish();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&tar).unwrap();
    let gz = gz.finish().unwrap();
    assert!(gz.len() < 1 << 20, "{} bytes", gz.len());
    let fx = Fixture::new();
    let err = unpack_layer_limited(
        &gz[..],
        Compression::Gzip,
        &fx.dest,
        UnpackMode::Overlay,
        16 << 20,
    )
    .unwrap_err();
    assert!(
        matches!(&err, UnpackError::TooLarge { entry, limit } if entry == "bomb" && *limit == 16 << 20),
        "{err}"
    );
    assert!(err.to_string().contains("limit of 16 MiB"), "{err}");
    assert!(fx.dest.join("small").exists());
    assert!(!fx.dest.join("bomb").exists(), "the bomb was written");
    // The same layer within a larger limit unpacks.
    let fx = Fixture::new();
    let report = unpack_layer_limited(
        &gz[..],
        Compression::Gzip,
        &fx.dest,
        UnpackMode::Overlay,
        65 << 20,
    )
    .unwrap();
    assert_eq!(report.bytes, (64 << 20) + 5);
}

#[test]
fn unpack_takes_the_reader_by_mutable_reference() {
    let fx = Fixture::new();
    let mut bytes = Tar::new().file("a", b"a").finish();
    bytes.extend_from_slice(b"trailing bytes the caller drains");
    let mut reader = &bytes[..];
    unpack_layer(
        &mut reader,
        Compression::None,
        &fx.dest,
        UnpackMode::Overlay,
    )
    .unwrap();
    assert!(!reader.is_empty());
}

#[test]
fn sniff_and_media_types() {
    assert_eq!(Compression::sniff(&[]), Compression::None);
    assert_eq!(Compression::sniff(&[0x1f]), Compression::None);
    assert_eq!(Compression::sniff(&[0x1f, 0x8b, 8]), Compression::Gzip);
    assert_eq!(
        Compression::sniff(&[0x28, 0xb5, 0x2f, 0xfd, 0]),
        Compression::Zstd
    );
    assert_eq!(Compression::sniff(b"etc/passwd\0"), Compression::None);
    let cases = [
        (
            "application/vnd.oci.image.layer.v1.tar",
            Some(Compression::None),
        ),
        (
            "application/vnd.oci.image.layer.v1.tar+gzip",
            Some(Compression::Gzip),
        ),
        (
            "application/vnd.oci.image.layer.v1.tar+zstd",
            Some(Compression::Zstd),
        ),
        (
            "application/vnd.oci.image.layer.nondistributable.v1.tar",
            Some(Compression::None),
        ),
        (
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
            Some(Compression::Gzip),
        ),
        (
            "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
            Some(Compression::Zstd),
        ),
        (
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
            Some(Compression::Gzip),
        ),
        (
            "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
            Some(Compression::Gzip),
        ),
        ("application/vnd.oci.image.config.v1+json", None),
        ("application/vnd.oci.image.layer.v1.tar+bzip2", None),
        ("", None),
    ];
    for (media_type, expected) in cases {
        assert_eq!(
            Compression::from_media_type(media_type),
            expected,
            "{media_type}"
        );
    }
}

#[test]
fn corrupt_streams_fail() {
    // Incompressible content, so cutting the compressed stream in half cuts into it.
    let mut state = 1_u32;
    let noise: Vec<u8> = (0..100_000)
        .map(|_| {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            (state >> 16) as u8
        })
        .collect();
    let tar = Tar::new().file("a", &noise).file("b", b"b").finish();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).unwrap();
    let gz = gz.finish().unwrap();
    let zst = zstd::encode_all(&tar[..], 3).unwrap();

    let cases: [(&[u8], Compression); 4] = [
        (&gz[..gz.len() / 2], Compression::Gzip),
        (b"\x1f\x8bnot really gzip at all", Compression::Gzip),
        (&zst[..zst.len() / 2], Compression::Zstd),
        (&tar[..700], Compression::None),
    ];
    for (bytes, compression) in cases {
        let fx = Fixture::new();
        let err = unpack_layer(bytes, compression, &fx.dest, UnpackMode::Overlay).unwrap_err();
        assert!(
            matches!(err, UnpackError::Corrupt { .. }),
            "{compression:?}: {err}"
        );
    }

    let mut bad_checksum = Tar::new().file("a", b"a").finish();
    bad_checksum[0] = b'b';
    let fx = Fixture::new();
    let err = fx.unpack(&bad_checksum, UnpackMode::Overlay).unwrap_err();
    assert!(matches!(err, UnpackError::Corrupt { .. }), "{err}");
}

#[test]
fn root_entries_other_than_directories_fail() {
    let fx = Fixture::new();
    // A type-NUL entry with a trailing slash is an old-style directory.
    let tar = Tar::new()
        .raw(b"./", EntryType::Regular, b"", b"", |h| {
            h.as_old_mut().linkflag = [0]
        })
        .raw(b"old/", EntryType::Regular, b"", b"", |h| {
            h.as_old_mut().linkflag = [0]
        })
        .finish();
    fx.unpack(&tar, UnpackMode::Overlay).unwrap();
    assert!(fs::metadata(fx.dest.join("old")).unwrap().is_dir());
    let tar = Tar::new().file("./", b"").finish();
    let err = fx.unpack(&tar, UnpackMode::Overlay).unwrap_err();
    assert!(matches!(err, UnpackError::Invalid { .. }), "{err}");
    let tar = Tar::new().symlink("/", "/etc").finish();
    let err = fx.unpack(&tar, UnpackMode::Overlay).unwrap_err();
    assert!(matches!(err, UnpackError::Invalid { .. }), "{err}");
}
