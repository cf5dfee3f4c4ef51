//! Running a view's steps: the [`Builder`] that [`HostView::plan`](super::HostView::plan) fills and
//! the [`FsPlan`] a freshly forked child enters with plain system calls (`unshare`, `mount`,
//! `open_tree`/`move_mount`/`mount_setattr`, `umount2`), allocating nothing.

use std::collections::BTreeSet;
use std::ffi::CString;
use std::io;
use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use super::{MAX_SLOTS, ViewError};
use crate::launch::Stage;

#[derive(Debug)]
pub(super) enum Step {
    Unshare(libc::c_int),
    MakePrivate,
    /// `slots[slot] = open_tree(path, OPEN_TREE_CLONE)`.
    CloneTree {
        path: CString,
        slot: usize,
    },
    /// `umount2(path, MNT_DETACH)`: the host's mounts there vanish from the view (not merely hidden
    /// under another, where `/proc/self/mountinfo` would still list them). Not a mount point is fine.
    Detach(CString),
    ReadOnlyAll,
    Mount {
        source: CString,
        target: CString,
        fstype: CString,
        flags: libc::c_ulong,
        data: CString,
        optional: bool,
    },
    BindNull(CString),
    ReadOnlyBind(CString),
    Mkdir(CString),
    Touch(CString),
    Symlink {
        target: CString,
        link: CString,
    },
    Attach {
        slot: usize,
        target: CString,
        idmap: Option<RawFd>,
        /// Device nodes stay usable (no `nodev`).
        device: bool,
    },
    Seal(CString),
    Hostname(CString),
    Chdir(CString),
}

#[derive(Default)]
pub(super) struct Builder {
    pub(super) steps: Vec<Step>,
    pub(super) slots: usize,
    pub(super) to_seal: Vec<CString>,
    pub(super) namespaces: Vec<Arc<OwnedFd>>,
    pub(super) made: BTreeSet<PathBuf>,
}

impl Builder {
    pub(super) fn step(&mut self, s: Step) {
        self.steps.push(s);
    }

    pub(super) fn cstr(&self, p: &Path) -> CString {
        CString::new(p.as_os_str().as_bytes()).unwrap_or_default()
    }

    pub(super) fn clone_tree(&mut self, p: &Path) -> Result<usize, ViewError> {
        if self.slots >= MAX_SLOTS {
            return Err(ViewError::TooMany);
        }
        let slot = self.slots;
        self.slots += 1;
        let path = self.cstr(p);
        self.step(Step::CloneTree { path, slot });
        Ok(slot)
    }

    pub(super) fn tmpfs(&mut self, target: &Path, options: &str, flags: libc::c_ulong) {
        self.made.insert(target.to_owned());
        let step = Step::Mount {
            source: self.cstr(Path::new("tmpfs")),
            target: self.cstr(target),
            fstype: self.cstr(Path::new("tmpfs")),
            flags,
            data: self.cstr(Path::new(options)),
            optional: false,
        };
        self.step(step);
    }

    pub(super) fn mount(
        &mut self,
        source: &str,
        target: &str,
        fstype: &str,
        flags: libc::c_ulong,
        data: &str,
        optional: bool,
    ) {
        let step = Step::Mount {
            source: self.cstr(Path::new(source)),
            target: self.cstr(Path::new(target)),
            fstype: self.cstr(Path::new(fstype)),
            flags,
            data: self.cstr(Path::new(data)),
            optional,
        };
        self.step(step);
    }

    /// Makes every missing directory up to `dir` (only possible inside Pier's own mounts).
    pub(super) fn ensure_dir(&mut self, dir: &Path) {
        let mut acc = PathBuf::from("/");
        for c in dir.components() {
            if let Component::Normal(n) = c {
                acc.push(n);
                if self.made.insert(acc.clone()) {
                    self.step(Step::Mkdir(self.cstr(&acc)));
                }
            }
        }
    }

    pub(super) fn ensure_file(&mut self, file: &Path) {
        if let Some(parent) = file.parent() {
            self.ensure_dir(parent);
        }
        self.step(Step::Touch(self.cstr(file)));
    }
}

/// The steps of one instance's view, run by [`FsPlan::enter`] in the forked child.
#[derive(Debug)]
pub struct FsPlan {
    pub(super) steps: Vec<Step>,
    pub(super) slots: usize,
    pub(super) _namespaces: Vec<Arc<OwnedFd>>,
}

/// A step that failed: which, and the OS error.
#[derive(Debug, Clone, Copy)]
pub struct StepFailed {
    /// The step.
    pub stage: Stage,
    /// The OS error number.
    pub errno: i32,
}

// open_tree(2), move_mount(2) and mount_setattr(2) (libc has the numbers, not the wrappers).
const OPEN_TREE_CLONE: libc::c_uint = 1;
const OPEN_TREE_CLOEXEC: libc::c_uint = libc::O_CLOEXEC as libc::c_uint;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

impl FsPlan {
    /// Runs the steps in the calling process. Async-signal-safe: only system calls on memory made before
    /// the fork; it allocates nothing. Meant for a freshly forked child that is about to `exec`.
    pub fn enter(&self) -> Result<(), StepFailed> {
        let mut slots = [-1 as RawFd; MAX_SLOTS];
        let fail = |stage: Stage| StepFailed {
            stage,
            errno: io::Error::last_os_error().raw_os_error().unwrap_or(0),
        };
        for step in &self.steps {
            #[allow(unsafe_code)]
            // SAFETY: every call below is a plain system call whose pointer arguments are C strings or
            // structs owned by this plan (or on this stack frame) for the duration of the call.
            unsafe {
                match step {
                    Step::Unshare(flags) => {
                        if libc::unshare(*flags) != 0 {
                            return Err(fail(Stage::UnshareMounts));
                        }
                    }
                    Step::MakePrivate => {
                        if libc::mount(
                            std::ptr::null(),
                            c"/".as_ptr(),
                            std::ptr::null(),
                            libc::MS_REC | libc::MS_PRIVATE,
                            std::ptr::null(),
                        ) != 0
                        {
                            return Err(fail(Stage::PrivateMounts));
                        }
                    }
                    Step::CloneTree { path, slot } => {
                        let fd = libc::syscall(
                            libc::SYS_open_tree,
                            libc::AT_FDCWD,
                            path.as_ptr(),
                            OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC,
                        );
                        if fd < 0 {
                            return Err(fail(Stage::OpenShown));
                        }
                        slots[*slot] = fd as RawFd;
                    }
                    Step::Detach(path) => {
                        if libc::umount2(path.as_ptr(), libc::MNT_DETACH) != 0
                            && errno() != libc::EINVAL
                            && errno() != libc::ENOENT
                        {
                            return Err(fail(Stage::Unmount));
                        }
                    }
                    Step::ReadOnlyAll => {
                        let attr = MountAttr {
                            attr_set: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
                            attr_clr: 0,
                            propagation: 0,
                            userns_fd: 0,
                        };
                        if libc::syscall(
                            libc::SYS_mount_setattr,
                            libc::AT_FDCWD,
                            c"/".as_ptr(),
                            libc::AT_RECURSIVE,
                            &attr as *const MountAttr,
                            std::mem::size_of::<MountAttr>(),
                        ) != 0
                        {
                            return Err(fail(Stage::ReadOnlyHost));
                        }
                    }
                    Step::Mount {
                        source,
                        target,
                        fstype,
                        flags,
                        data,
                        optional,
                    } => {
                        if libc::mount(
                            source.as_ptr(),
                            target.as_ptr(),
                            fstype.as_ptr(),
                            *flags,
                            data.as_ptr().cast(),
                        ) != 0
                            && !optional
                        {
                            return Err(fail(Stage::MountPrivate));
                        }
                    }
                    Step::BindNull(target) => {
                        if libc::mount(
                            c"/dev/null".as_ptr(),
                            target.as_ptr(),
                            std::ptr::null(),
                            libc::MS_BIND,
                            std::ptr::null(),
                        ) != 0
                        {
                            return Err(fail(Stage::HideFile));
                        }
                    }
                    Step::ReadOnlyBind(target) => {
                        if libc::mount(
                            target.as_ptr(),
                            target.as_ptr(),
                            std::ptr::null(),
                            libc::MS_BIND | libc::MS_REC,
                            std::ptr::null(),
                        ) != 0
                        {
                            return Err(fail(Stage::ReadOnlyPath));
                        }
                        let attr = MountAttr {
                            attr_set: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
                            attr_clr: 0,
                            propagation: 0,
                            userns_fd: 0,
                        };
                        if libc::syscall(
                            libc::SYS_mount_setattr,
                            libc::AT_FDCWD,
                            target.as_ptr(),
                            libc::AT_RECURSIVE,
                            &attr as *const MountAttr,
                            std::mem::size_of::<MountAttr>(),
                        ) != 0
                        {
                            return Err(fail(Stage::ReadOnlyPath));
                        }
                    }
                    Step::Mkdir(path) => {
                        if libc::mkdir(path.as_ptr(), 0o755) != 0 && errno() != libc::EEXIST {
                            return Err(fail(Stage::MountPoint));
                        }
                    }
                    Step::Touch(path) => {
                        let fd = libc::open(
                            path.as_ptr(),
                            libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
                            0o644,
                        );
                        if fd >= 0 {
                            libc::close(fd);
                        } else if errno() != libc::EEXIST && errno() != libc::EROFS {
                            return Err(fail(Stage::MountPoint));
                        }
                    }
                    Step::Symlink { target, link } => {
                        if libc::symlink(target.as_ptr(), link.as_ptr()) != 0
                            && errno() != libc::EEXIST
                        {
                            return Err(fail(Stage::Link));
                        }
                    }
                    Step::Attach {
                        slot,
                        target,
                        idmap,
                        device,
                    } => {
                        let fd = slots[*slot];
                        let mut attr = MountAttr {
                            attr_set: if *device {
                                MOUNT_ATTR_NOSUID
                            } else {
                                MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV
                            },
                            attr_clr: 0,
                            propagation: 0,
                            userns_fd: 0,
                        };
                        if let Some(ns) = idmap {
                            attr.attr_set |= MOUNT_ATTR_IDMAP;
                            attr.userns_fd = *ns as u64;
                        }
                        let mut r = libc::syscall(
                            libc::SYS_mount_setattr,
                            fd,
                            c"".as_ptr(),
                            libc::AT_EMPTY_PATH,
                            &attr as *const MountAttr,
                            std::mem::size_of::<MountAttr>(),
                        );
                        if r != 0 && idmap.is_some() {
                            // A filesystem without idmapped mounts: show it as it is.
                            attr.attr_set &= !MOUNT_ATTR_IDMAP;
                            attr.userns_fd = 0;
                            r = libc::syscall(
                                libc::SYS_mount_setattr,
                                fd,
                                c"".as_ptr(),
                                libc::AT_EMPTY_PATH,
                                &attr as *const MountAttr,
                                std::mem::size_of::<MountAttr>(),
                            );
                        }
                        if r != 0 {
                            return Err(fail(Stage::ShownOptions));
                        }
                        if libc::syscall(
                            libc::SYS_move_mount,
                            fd,
                            c"".as_ptr(),
                            libc::AT_FDCWD,
                            target.as_ptr(),
                            MOVE_MOUNT_F_EMPTY_PATH,
                        ) != 0
                        {
                            return Err(fail(Stage::MountShown));
                        }
                        libc::close(fd);
                    }
                    Step::Seal(target) => {
                        let attr = MountAttr {
                            attr_set: MOUNT_ATTR_RDONLY,
                            attr_clr: 0,
                            propagation: 0,
                            userns_fd: 0,
                        };
                        if libc::syscall(
                            libc::SYS_mount_setattr,
                            libc::AT_FDCWD,
                            target.as_ptr(),
                            0,
                            &attr as *const MountAttr,
                            std::mem::size_of::<MountAttr>(),
                        ) != 0
                            && errno() != libc::ENOENT
                        {
                            // (A hidden area under another replaced one, such as a data dir in /tmp, is
                            // gone already.)
                            return Err(fail(Stage::Seal));
                        }
                    }
                    Step::Hostname(name) => {
                        if libc::sethostname(name.as_ptr(), name.as_bytes().len()) != 0 {
                            return Err(fail(Stage::Hostname));
                        }
                    }
                    Step::Chdir(dir) => {
                        if libc::chdir(dir.as_ptr()) != 0 {
                            return Err(fail(Stage::Workdir));
                        }
                    }
                }
            }
        }
        let _ = self.slots;
        Ok(())
    }
}

pub(super) fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}
