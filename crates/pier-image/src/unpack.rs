//! Safe unpacking of OCI/Docker image layer tarballs into a directory.
//!
//! Layers come from registries and archives we do not control, so the tar is treated as hostile: every
//! path is resolved one component at a time from a file descriptor of the destination, symlinks met on
//! the way are followed the way they will be inside the container (absolute targets and `..` stay under
//! the destination), and every change is made with `*at` calls on a directory reached that way, never
//! following the final component. Nothing outside the destination can be created, changed or removed.

use std::collections::{HashSet, VecDeque};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, Uid, XattrFlags};
use rustix::io::Errno;

/// Symlinks followed while resolving one path, as the kernel's own limit.
const MAX_SYMLINK_HOPS: u32 = 40;
/// Deepest directory an entry may resolve to; bounds recursion and open descriptors when removing trees.
const MAX_DEPTH: usize = 512;
/// Longest entry or link path accepted, as Linux's `PATH_MAX`.
const MAX_PATH_LEN: usize = 4096;

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const WHITEOUT_META_PREFIX: &[u8] = b".wh..wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";
const PAX_XATTR_PREFIX: &[u8] = b"SCHILY.xattr.";

/// How a layer's bytes are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// From an OCI/Docker layer media type; `None` when the media type is not a known layer type.
    pub fn from_media_type(media_type: &str) -> Option<Compression> {
        match media_type {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => Some(Compression::None),
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => {
                Some(Compression::Gzip)
            }
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => {
                Some(Compression::Zstd)
            }
            _ => None,
        }
    }

    /// From the first bytes of a layer: gzip and zstd magic numbers, anything else is taken as a plain tar.
    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// How whiteouts are represented in the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnpackMode {
    /// Each layer is unpacked into its own empty directory, used as an overlayfs lower dir:
    /// `.wh.NAME` becomes a character device 0:0 named NAME; `DIR/.wh..wh..opq` sets xattr
    /// `trusted.overlay.opaque` = "y" on DIR.
    Overlay,
    /// Layers are applied one after another onto the same directory (a plain copy, when overlayfs is
    /// unavailable): `.wh.NAME` removes NAME (recursively) from what lower layers left; `DIR/.wh..wh..opq`
    /// removes every child of DIR that this same layer did not write (entries may come before or after the
    /// marker in the tar).
    Flatten,
}

/// What an unpack did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnpackReport {
    /// Tar entries read (extension headers such as PAX and GNU long names not counted).
    pub entries: u64,
    /// Bytes of regular file content written.
    pub bytes: u64,
    /// Entries or attributes not created, with why (device nodes, unsupported xattrs...).
    pub skipped: Vec<String>,
}

/// Why a layer could not be unpacked. The destination is left partially unpacked.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// The entry's path has a `..` component.
    #[error("entry {entry:?}: path leaves the layer root")]
    Escape { entry: String },
    /// A hardlink whose target leaves the layer root, does not exist or is a directory.
    #[error("entry {entry:?}: bad hardlink target {target:?}: {reason}")]
    BadLink {
        entry: String,
        target: String,
        reason: &'static str,
    },
    /// An entry that cannot be applied as given (bad whiteout, symlink loop, path through a file...).
    #[error("entry {entry:?}: {reason}")]
    Invalid { entry: String, reason: String },
    /// The stream is not a well-formed tar in the stated compression.
    #[error("corrupt layer {context}: {source}")]
    Corrupt { context: String, source: io::Error },
    /// A filesystem operation failed.
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
    /// The layer's files add up to more than the unpacking limit (a decompression bomb, or an image too
    /// big for this server).
    #[error("entry {entry:?} takes the unpacked size past the limit of {} MiB", limit >> 20)]
    TooLarge { entry: String, limit: u64 },
}

/// Unpacks one layer read from `reader` (compressed as `compression`) into `dest` (an existing directory).
///
/// Reading stops at the tar's end-of-archive marker; the caller drains whatever follows.
pub fn unpack_layer(
    reader: impl Read,
    compression: Compression,
    dest: &Path,
    mode: UnpackMode,
) -> Result<UnpackReport, UnpackError> {
    unpack_layer_limited(reader, compression, dest, mode, u64::MAX)
}

/// [`unpack_layer`], refusing (before writing it) a file that would take the content written past
/// `limit` bytes.
pub fn unpack_layer_limited(
    reader: impl Read,
    compression: Compression,
    dest: &Path,
    mode: UnpackMode,
    limit: u64,
) -> Result<UnpackReport, UnpackError> {
    let root = rustix::fs::open(
        dest,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| UnpackError::Io {
        context: format!("opening layer destination {}", dest.display()),
        source: e.into(),
    })?;
    let mut unpacker = Unpacker {
        root,
        mode,
        limit,
        report: UnpackReport::default(),
        written: HashSet::new(),
    };
    match compression {
        Compression::None => unpacker.unpack_tar(reader)?,
        Compression::Gzip => unpacker.unpack_tar(flate2::read::MultiGzDecoder::new(reader))?,
        Compression::Zstd => {
            let decoder =
                zstd::stream::read::Decoder::new(reader).map_err(|source| UnpackError::Io {
                    context: "starting the zstd decoder".to_owned(),
                    source,
                })?;
            unpacker.unpack_tar(decoder)?;
        }
    }
    let report = unpacker.report;
    tracing::debug!(
        dest = %dest.display(),
        entries = report.entries,
        bytes = report.bytes,
        skipped = report.skipped.len(),
        "unpacked layer"
    );
    Ok(report)
}

struct Unpacker {
    /// The destination directory, which nothing may leave.
    root: OwnedFd,
    mode: UnpackMode,
    /// Most bytes of file content this layer may write.
    limit: u64,
    report: UnpackReport,
    /// Flatten mode: resolved paths (relative to the root) this layer wrote, with all their ancestors.
    written: HashSet<PathBuf>,
}

/// A directory reached from the root without leaving it.
struct DirHandle {
    fd: OwnedFd,
    /// Its path relative to the root, symlinks resolved.
    path: PathBuf,
}

/// What a tar entry asks to create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
    Symlink,
    Hardlink,
    Fifo,
    Device(&'static str),
    Unsupported(u8),
}

impl Kind {
    fn of(header: &tar::Header, raw_path: &[u8]) -> Kind {
        use tar::EntryType;
        match header.entry_type() {
            // Pre-POSIX tars mark directories with a trailing slash on a type-NUL entry.
            EntryType::Regular if header.as_bytes()[156] == 0 && raw_path.ends_with(b"/") => {
                Kind::Dir
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => Kind::File,
            EntryType::Directory => Kind::Dir,
            EntryType::Symlink => Kind::Symlink,
            EntryType::Link => Kind::Hardlink,
            EntryType::Fifo => Kind::Fifo,
            EntryType::Char => Kind::Device("character device"),
            EntryType::Block => Kind::Device("block device"),
            other => Kind::Unsupported(other.as_byte()),
        }
    }
}

/// Ownership, permissions and attributes of an entry.
struct Meta {
    uid: Uid,
    gid: Gid,
    mode: Mode,
    mtime: Option<SystemTime>,
    /// Extended attributes allowed to be set (see [`xattr_allowed`]).
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Unpacker {
    fn unpack_tar(&mut self, tar: impl Read) -> Result<(), UnpackError> {
        let mut archive = tar::Archive::new(tar);
        let entries = archive.entries().map_err(|source| UnpackError::Corrupt {
            context: "at the start".to_owned(),
            source,
        })?;
        let mut last: Option<String> = None;
        for entry in entries {
            let mut entry = entry.map_err(|source| UnpackError::Corrupt {
                context: match &last {
                    Some(name) => format!("after entry {name:?}"),
                    None => "at the first entry".to_owned(),
                },
                source,
            })?;
            last = Some(self.apply(&mut entry)?);
        }
        Ok(())
    }

    /// Applies one entry, returning its name for error messages about what follows.
    fn apply<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<String, UnpackError> {
        let raw_path = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw_path).into_owned();
        if entry.header().entry_type().is_pax_global_extensions() {
            return Ok(name);
        }
        self.report.entries += 1;
        let components = split_path(&raw_path).map_err(|bad| bad.into_error(&name))?;
        if let Some((last, parents)) = components.split_last()
            && last.as_bytes().starts_with(WHITEOUT_PREFIX)
        {
            self.whiteout(&name, parents, last)?;
            return Ok(name);
        }
        let kind = Kind::of(entry.header(), &raw_path);
        match kind {
            Kind::Device(what) => self.skip(format!("{name}: {what} not created")),
            Kind::Unsupported(byte) => self.skip(format!(
                "{name}: unsupported entry type {:?} not created",
                char::from(byte)
            )),
            _ => {
                let meta = self.read_meta(entry, &name)?;
                match components.split_last() {
                    None => self.apply_root(&name, kind, &meta)?,
                    Some((last, parents)) => {
                        let parent = self.parent_dir(&name, parents)?;
                        self.create(entry, &name, kind, &meta, &parent, last)?;
                        self.mark_written(&parent.path.join(last));
                    }
                }
            }
        }
        Ok(name)
    }

    fn create<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        name: &str,
        kind: Kind,
        meta: &Meta,
        parent: &DirHandle,
        file_name: &OsStr,
    ) -> Result<(), UnpackError> {
        if !matches!(kind, Kind::File | Kind::Dir) {
            self.skip_xattrs(name, meta, "not supported on this entry type");
        }
        match kind {
            Kind::File => self.create_file(entry, name, meta, parent, file_name),
            Kind::Dir => self.create_dir(name, meta, parent, file_name),
            Kind::Symlink => {
                let target = link_target(entry, name)?;
                self.create_symlink(name, &target, meta, parent, file_name)
            }
            Kind::Hardlink => {
                let target = link_target(entry, name)?;
                self.create_hardlink(name, &target, parent, file_name)
            }
            Kind::Fifo => self.create_fifo(name, meta, parent, file_name),
            Kind::Device(_) | Kind::Unsupported(_) => Ok(()),
        }
    }

    fn skip(&mut self, why: String) {
        tracing::debug!(skipped = %why, "layer entry skipped");
        self.report.skipped.push(why);
    }

    fn read_meta<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        name: &str,
    ) -> Result<Meta, UnpackError> {
        let header = entry.header();
        let corrupt = |source: io::Error| UnpackError::Corrupt {
            context: format!("in entry {name:?}"),
            source,
        };
        let uid = header.uid().map_err(corrupt)?;
        let gid = header.gid().map_err(corrupt)?;
        let mode = header.mode().map_err(corrupt)?;
        let mut mtime = header.mtime().map_err(corrupt)?;
        let (uid, gid) = match (id_u32(uid), id_u32(gid)) {
            (Some(uid), Some(gid)) => (Uid::from_raw(uid), Gid::from_raw(gid)),
            _ => return Err(invalid(name, format!("owner {uid}:{gid} out of range"))),
        };

        let mut xattrs = Vec::new();
        let mut refused = Vec::new();
        if let Some(pax) = entry.pax_extensions().map_err(corrupt)? {
            for record in pax {
                let record = record.map_err(corrupt)?;
                let key = record.key_bytes();
                if key == b"mtime" {
                    mtime = parse_pax_seconds(record.value_bytes()).unwrap_or(mtime);
                } else if let Some(xattr) = key.strip_prefix(PAX_XATTR_PREFIX) {
                    if xattr_allowed(xattr) {
                        xattrs.push((xattr.to_vec(), record.value_bytes().to_vec()));
                    } else {
                        refused.push(String::from_utf8_lossy(xattr).into_owned());
                    }
                }
            }
        }
        for xattr in refused {
            self.skip(format!(
                "{name}: xattr {xattr} not applied: not allowed in layers"
            ));
        }
        Ok(Meta {
            uid,
            gid,
            mode: Mode::from_raw_mode(mode & 0o7777),
            mtime: SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(mtime)),
            xattrs,
        })
    }

    fn skip_xattrs(&mut self, name: &str, meta: &Meta, why: &str) {
        for (xattr, _) in &meta.xattrs {
            self.skip(format!(
                "{name}: xattr {} not applied: {why}",
                String::from_utf8_lossy(xattr)
            ));
        }
    }

    /// `.`, `./` or `/`: only a directory entry may describe the root, and only its metadata is applied.
    fn apply_root(&mut self, name: &str, kind: Kind, meta: &Meta) -> Result<(), UnpackError> {
        if kind != Kind::Dir {
            return Err(invalid(
                name,
                "only a directory can stand for the layer root",
            ));
        }
        let root = self
            .root
            .try_clone()
            .or_entry(name, "opening the layer root")?;
        self.set_owner_mode(name, &root, meta)?;
        self.set_xattrs(name, &root, meta)
    }

    fn create_file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        name: &str,
        meta: &Meta,
        parent: &DirHandle,
        file_name: &OsStr,
    ) -> Result<(), UnpackError> {
        if self.report.bytes.saturating_add(entry.size()) > self.limit {
            return Err(UnpackError::TooLarge {
                entry: name.to_owned(),
                limit: self.limit,
            });
        }
        self.make_room(name, parent, file_name, false)?;
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&parent.fd, file_name, flags, Mode::from_raw_mode(0o600))
            .or_entry(name, "creating file")?;
        let mut file = File::from(fd);
        self.report.bytes += copy_content(entry, &mut file, name)?;
        self.set_owner_mode(name, &file, meta)?;
        // After chown, which drops security.capability.
        self.set_xattrs(name, &file, meta)?;
        if let Some(mtime) = meta.mtime {
            file.set_modified(mtime)
                .or_entry(name, "setting modification time")?;
        }
        Ok(())
    }

    fn create_dir(
        &mut self,
        name: &str,
        meta: &Meta,
        parent: &DirHandle,
        file_name: &OsStr,
    ) -> Result<(), UnpackError> {
        if !self.make_room(name, parent, file_name, true)? {
            rustix::fs::mkdirat(&parent.fd, file_name, Mode::from_raw_mode(0o700))
                .or_entry(name, "creating directory")?;
        }
        let dir = open_dir(parent.fd.as_fd(), file_name).or_entry(name, "opening directory")?;
        self.set_owner_mode(name, &dir, meta)?;
        self.set_xattrs(name, &dir, meta)
    }

    fn create_symlink(
        &mut self,
        name: &str,
        target: &[u8],
        meta: &Meta,
        parent: &DirHandle,
        file_name: &OsStr,
    ) -> Result<(), UnpackError> {
        self.make_room(name, parent, file_name, false)?;
        rustix::fs::symlinkat(target, &parent.fd, file_name).or_entry(name, "creating symlink")?;
        rustix::fs::chownat(
            &parent.fd,
            file_name,
            Some(meta.uid),
            Some(meta.gid),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .or_entry(name, "setting symlink owner")
    }

    fn create_hardlink(
        &mut self,
        name: &str,
        target: &[u8],
        parent: &DirHandle,
        file_name: &OsStr,
    ) -> Result<(), UnpackError> {
        let bad = |reason| UnpackError::BadLink {
            entry: name.to_owned(),
            target: String::from_utf8_lossy(target).into_owned(),
            reason,
        };
        let components =
            split_path(target).map_err(|_| bad("path leaves the layer root or is malformed"))?;
        let (target_name, target_parents) = components
            .split_last()
            .ok_or_else(|| bad("it is the layer root"))?;
        let target_dir = self
            .walk(name, target_parents, false)?
            .ok_or_else(|| bad("it does not exist in the layer"))?;
        let target_stat = stat_at(target_dir.fd.as_fd(), target_name)
            .or_entry(name, "looking up hardlink target")?
            .ok_or_else(|| bad("it does not exist in the layer"))?;
        if FileType::from_raw_mode(target_stat.st_mode) == FileType::Directory {
            return Err(bad("it is a directory"));
        }
        let existing =
            stat_at(parent.fd.as_fd(), file_name).or_entry(name, "looking up existing entry")?;
        if existing
            .is_some_and(|s| s.st_dev == target_stat.st_dev && s.st_ino == target_stat.st_ino)
        {
            return Ok(());
        }
        self.make_room(name, parent, file_name, false)?;
        rustix::fs::linkat(
            &target_dir.fd,
            *target_name,
            &parent.fd,
            file_name,
            AtFlags::empty(),
        )
        .or_entry(name, "creating hardlink")
    }

    fn create_fifo(
        &mut self,
        name: &str,
        meta: &Meta,
        parent: &DirHandle,
        file_name: &OsStr,
    ) -> Result<(), UnpackError> {
        self.make_room(name, parent, file_name, false)?;
        rustix::fs::mknodat(
            &parent.fd,
            file_name,
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .or_entry(name, "creating fifo")?;
        rustix::fs::chownat(
            &parent.fd,
            file_name,
            Some(meta.uid),
            Some(meta.gid),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .or_entry(name, "setting fifo owner")?;
        // The name was just created as a fifo, so following it cannot lead anywhere else.
        rustix::fs::chmodat(&parent.fd, file_name, meta.mode, AtFlags::empty())
            .or_entry(name, "setting fifo mode")
    }

    /// Owner first: chown clears setuid/setgid bits that chmod then sets.
    fn set_owner_mode(&self, name: &str, fd: impl AsFd, meta: &Meta) -> Result<(), UnpackError> {
        rustix::fs::fchown(&fd, Some(meta.uid), Some(meta.gid)).or_entry(name, "setting owner")?;
        rustix::fs::fchmod(&fd, meta.mode).or_entry(name, "setting mode")
    }

    fn set_xattrs(&mut self, name: &str, fd: impl AsFd, meta: &Meta) -> Result<(), UnpackError> {
        for (xattr, value) in &meta.xattrs {
            match rustix::fs::fsetxattr(&fd, xattr.as_slice(), value, XattrFlags::empty()) {
                Ok(()) => {}
                // Refused for this name, value, file type or filesystem: not worth failing the layer.
                Err(
                    e @ (Errno::OPNOTSUPP
                    | Errno::INVAL
                    | Errno::RANGE
                    | Errno::TOOBIG
                    | Errno::PERM),
                ) => self.skip(format!(
                    "{name}: xattr {} not applied: {e}",
                    String::from_utf8_lossy(xattr)
                )),
                Err(e) => return Err(io_error(name, "setting xattr", e)),
            }
        }
        Ok(())
    }

    /// Clears `parent/file_name` for a new entry. Returns true when an existing directory was kept for a
    /// directory entry; any other existing entry is removed (recursively for a directory).
    fn make_room(
        &self,
        name: &str,
        parent: &DirHandle,
        file_name: &OsStr,
        keep_dir: bool,
    ) -> Result<bool, UnpackError> {
        let Some(stat) =
            stat_at(parent.fd.as_fd(), file_name).or_entry(name, "looking up existing entry")?
        else {
            return Ok(false);
        };
        if FileType::from_raw_mode(stat.st_mode) == FileType::Directory {
            if keep_dir {
                return Ok(true);
            }
            remove_all_at(parent.fd.as_fd(), file_name, 0)
                .or_entry(name, "removing existing directory")?;
        } else {
            rustix::fs::unlinkat(&parent.fd, file_name, AtFlags::empty())
                .or_entry(name, "removing existing entry")?;
        }
        Ok(false)
    }

    fn whiteout(
        &mut self,
        name: &str,
        parents: &[&OsStr],
        marker: &OsStr,
    ) -> Result<(), UnpackError> {
        let marker = marker.as_bytes();
        if marker == OPAQUE_MARKER {
            return self.opaque(name, parents);
        }
        if marker.starts_with(WHITEOUT_META_PREFIX) {
            // aufs bookkeeping (.wh..wh.plnk, .wh..wh.aufs): meaningless outside aufs.
            return Ok(());
        }
        let hidden = &marker[WHITEOUT_PREFIX.len()..];
        if matches!(hidden, b"" | b"." | b"..") {
            return Err(invalid(name, "whiteout does not name a file"));
        }
        let hidden = OsStr::from_bytes(hidden);
        match self.mode {
            UnpackMode::Overlay => {
                let parent = self.parent_dir(name, parents)?;
                self.make_room(name, &parent, hidden, false)?;
                rustix::fs::mknodat(
                    &parent.fd,
                    hidden,
                    FileType::CharacterDevice,
                    Mode::empty(),
                    0,
                )
                .or_entry(name, "creating whiteout device")
            }
            UnpackMode::Flatten => match self.walk(name, parents, false)? {
                Some(parent) => remove_all_at(parent.fd.as_fd(), hidden, 0)
                    .or_entry(name, "removing whited-out entry"),
                None => Ok(()),
            },
        }
    }

    fn opaque(&mut self, name: &str, parents: &[&OsStr]) -> Result<(), UnpackError> {
        let dir = self.parent_dir(name, parents)?;
        match self.mode {
            UnpackMode::Overlay => {
                rustix::fs::fsetxattr(&dir.fd, OVERLAY_OPAQUE_XATTR, b"y", XattrFlags::empty())
                    .or_entry(name, "marking directory opaque")
            }
            UnpackMode::Flatten => {
                self.mark_written(&dir.path);
                self.prune(dir.fd.as_fd(), &dir.path, 0)
                    .or_entry(name, "emptying opaque directory")
            }
        }
    }

    /// Flatten mode: removes everything under `dir` that this layer has not written.
    fn prune(&self, dir: BorrowedFd<'_>, path: &Path, depth: usize) -> io::Result<()> {
        check_depth(depth)?;
        for child in list_dir(dir)? {
            let child_path = path.join(&child);
            if !self.written.contains(&child_path) {
                remove_all_at(dir, &child, depth + 1)?;
            } else if stat_at(dir, &child)?
                .is_some_and(|s| FileType::from_raw_mode(s.st_mode) == FileType::Directory)
            {
                let child_dir = open_dir(dir, &child)?;
                self.prune(child_dir.as_fd(), &child_path, depth + 1)?;
            }
        }
        Ok(())
    }

    fn mark_written(&mut self, path: &Path) {
        if self.mode != UnpackMode::Flatten {
            return;
        }
        for ancestor in path.ancestors() {
            // Ancestors of a path already recorded are recorded too.
            if ancestor.as_os_str().is_empty() || !self.written.insert(ancestor.to_path_buf()) {
                break;
            }
        }
    }

    /// The directory an entry goes in, creating missing directories.
    fn parent_dir(&self, name: &str, components: &[&OsStr]) -> Result<DirHandle, UnpackError> {
        self.walk(name, components, true)?
            .ok_or_else(|| invalid(name, "parent directory is missing"))
    }

    /// Resolves `components` to a directory under the root, securejoin style: symlinks are followed with
    /// absolute targets taken from the root and `..` stopping at the root. A missing component is created
    /// (0755, root-owned) when `create`, else the result is `None`.
    fn walk(
        &self,
        name: &str,
        components: &[&OsStr],
        create: bool,
    ) -> Result<Option<DirHandle>, UnpackError> {
        let mut pending: VecDeque<OsString> = components.iter().map(|c| c.to_os_string()).collect();
        let mut fd = self.reopen_root(name)?;
        let mut path = PathBuf::new();
        let mut depth = 0;
        let mut hops = 0;
        while let Some(component) = pending.pop_front() {
            match component.as_bytes() {
                b"" | b"." => continue,
                b".." => {
                    // Every directory on the stack was entered from its parent, so `..` is that parent.
                    if depth > 0 {
                        fd = open_dir(fd.as_fd(), OsStr::new(".."))
                            .or_entry(name, "resolving path")?;
                        path.pop();
                        depth -= 1;
                    }
                    continue;
                }
                _ => {}
            }
            let stat = stat_at(fd.as_fd(), &component).or_entry(name, "resolving path")?;
            match stat.map(|s| FileType::from_raw_mode(s.st_mode)) {
                Some(FileType::Symlink) => {
                    hops += 1;
                    if hops > MAX_SYMLINK_HOPS {
                        return Err(invalid(name, "too many levels of symbolic links"));
                    }
                    let target = rustix::fs::readlinkat(&fd, &component, Vec::new())
                        .or_entry(name, "reading symlink")?;
                    let target = target.as_bytes();
                    if target.starts_with(b"/") {
                        fd = self.reopen_root(name)?;
                        path = PathBuf::new();
                        depth = 0;
                    }
                    for part in target.split(|b| *b == b'/').rev() {
                        pending.push_front(OsStr::from_bytes(part).to_os_string());
                    }
                    continue;
                }
                Some(FileType::Directory) => {
                    fd = open_dir(fd.as_fd(), &component).or_entry(name, "resolving path")?;
                }
                Some(_) => {
                    let what = path.join(&component);
                    return Err(invalid(
                        name,
                        format!("{} is not a directory", what.display()),
                    ));
                }
                None if create => {
                    fd = make_parent_dir(fd.as_fd(), &component)
                        .or_entry(name, "creating parent directory")?
                }
                None => return Ok(None),
            }
            path.push(&component);
            depth += 1;
            if depth > MAX_DEPTH {
                return Err(invalid(name, "path is too deep"));
            }
        }
        Ok(Some(DirHandle { fd, path }))
    }

    fn reopen_root(&self, name: &str) -> Result<OwnedFd, UnpackError> {
        self.root
            .try_clone()
            .or_entry(name, "opening the layer root")
    }
}

/// Why an entry or link path was refused.
enum BadPath {
    ParentDir,
    Invalid(&'static str),
}

impl BadPath {
    fn into_error(self, name: &str) -> UnpackError {
        match self {
            BadPath::ParentDir => UnpackError::Escape {
                entry: name.to_owned(),
            },
            BadPath::Invalid(reason) => invalid(name, reason),
        }
    }
}

/// Splits a tar path into its normal components: leading `/`, `.` and empty components are dropped (an
/// empty result is the root itself) and any `..` is refused.
fn split_path(raw: &[u8]) -> Result<Vec<&OsStr>, BadPath> {
    if raw.len() > MAX_PATH_LEN {
        return Err(BadPath::Invalid("path is too long"));
    }
    if raw.contains(&0) {
        return Err(BadPath::Invalid("path contains a NUL byte"));
    }
    let mut components = Vec::new();
    for part in raw.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return Err(BadPath::ParentDir),
            _ => components.push(OsStr::from_bytes(part)),
        }
    }
    Ok(components)
}

fn link_target<R: Read>(entry: &tar::Entry<'_, R>, name: &str) -> Result<Vec<u8>, UnpackError> {
    match entry.link_name_bytes() {
        Some(target) if !target.is_empty() => Ok(target.into_owned()),
        _ => Err(invalid(name, "link has no target")),
    }
}

/// `user.*` and file capabilities; never overlayfs's own attributes (`trusted.overlay.*`, or
/// `user.overlay.*` on `userxattr` mounts), which would let a layer fake whiteouts and redirects.
fn xattr_allowed(name: &[u8]) -> bool {
    (name.starts_with(b"user.") && !name.starts_with(b"user.overlay."))
        || name == b"security.capability"
}

/// uid/gid as the kernel takes them; `u32::MAX` means "unchanged" to chown, so it is refused too.
fn id_u32(id: u64) -> Option<u32> {
    u32::try_from(id).ok().filter(|id| *id != u32::MAX)
}

/// Whole seconds of a PAX time such as `1700000000.123456789`; negative or malformed times are ignored.
fn parse_pax_seconds(value: &[u8]) -> Option<u64> {
    let seconds = value.split(|b| *b == b'.').next()?;
    std::str::from_utf8(seconds).ok()?.parse().ok()
}

/// Copies an entry's content, telling tar read errors (corrupt layer) from write errors.
fn copy_content(mut entry: impl Read, file: &mut File, name: &str) -> Result<u64, UnpackError> {
    let mut buf = vec![0; 64 * 1024];
    let mut total = 0;
    loop {
        let n = match entry.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(UnpackError::Corrupt {
                    context: format!("in entry {name:?}"),
                    source,
                });
            }
        };
        file.write_all(&buf[..n]).or_entry(name, "writing file")?;
        total += n as u64;
    }
}

fn stat_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Option<rustix::fs::Stat>> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) => Ok(Some(stat)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn open_dir(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    Ok(rustix::fs::openat(dir, name, flags, Mode::empty())?)
}

/// A directory made for a path's missing component: root-owned 0755, whatever the umask or a setgid
/// parent would give.
fn make_parent_dir(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<OwnedFd> {
    rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o755))?;
    let fd = open_dir(dir, name)?;
    rustix::fs::fchown(&fd, Some(Uid::ROOT), Some(Gid::ROOT))?;
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o755))?;
    Ok(fd)
}

fn list_dir(dir: BorrowedFd<'_>) -> io::Result<Vec<OsString>> {
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir)? {
        let name = entry?.file_name().to_bytes().to_vec();
        if name != b"." && name != b".." {
            names.push(OsStr::from_bytes(&name).to_os_string());
        }
    }
    Ok(names)
}

/// Removes `dir/name` and, for a directory, everything under it; symlinks are removed, not followed.
fn remove_all_at(dir: BorrowedFd<'_>, name: &OsStr, depth: usize) -> io::Result<()> {
    check_depth(depth)?;
    let Some(stat) = stat_at(dir, name)? else {
        return Ok(());
    };
    if FileType::from_raw_mode(stat.st_mode) != FileType::Directory {
        return Ok(rustix::fs::unlinkat(dir, name, AtFlags::empty())?);
    }
    let child = open_dir(dir, name)?;
    for grandchild in list_dir(child.as_fd())? {
        remove_all_at(child.as_fd(), &grandchild, depth + 1)?;
    }
    Ok(rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)?)
}

/// Trees under the root are at most `MAX_DEPTH + 1` deep: entries go in directories of depth `MAX_DEPTH`
/// at most.
fn check_depth(depth: usize) -> io::Result<()> {
    if depth > MAX_DEPTH + 1 {
        return Err(io::Error::other("directory tree is too deep"));
    }
    Ok(())
}

fn invalid(name: &str, reason: impl Into<String>) -> UnpackError {
    UnpackError::Invalid {
        entry: name.to_owned(),
        reason: reason.into(),
    }
}

fn io_error(name: &str, action: &str, source: impl Into<io::Error>) -> UnpackError {
    UnpackError::Io {
        context: format!("entry {name:?}: {action}"),
        source: source.into(),
    }
}

/// Attaches the entry and the failed action to a filesystem error.
trait OrEntry<T> {
    fn or_entry(self, name: &str, action: &str) -> Result<T, UnpackError>;
}

impl<T, E: Into<io::Error>> OrEntry<T> for Result<T, E> {
    fn or_entry(self, name: &str, action: &str) -> Result<T, UnpackError> {
        self.map_err(|e| io_error(name, action, e))
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod proptests;
