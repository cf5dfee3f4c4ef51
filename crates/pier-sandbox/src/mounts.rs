//! Idmapped mounts, for image roots that are not the host's root: a container's files appear owned by
//! its service's ids (`mount_setattr` with `MOUNT_ATTR_IDMAP`, Linux 5.12+; overlayfs over idmapped
//! layers, 5.19+; layers handed to overlayfs as descriptors with `lowerdir+`, 6.8+). runc 1.1 cannot
//! idmap mounts itself (1.2 can), so Pier builds the finished root and gives runc its path.
//!
//! Only read-only mounts are idmapped: an idmapped writable mount would let the instance create files
//! owned by the host's root on disk.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_FD: libc::c_uint = 5;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path holds a NUL byte"))
}

fn check(r: libc::c_long, what: &str, path: &Path) -> io::Result<libc::c_long> {
    if r < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("{what} {}: {e}", path.display()),
        ));
    }
    Ok(r)
}

/// A detached copy of the mount at `path`, read-only, `nosuid`, `nodev`, with ids mapped through
/// `userns` (a file owned by `k` on disk shows as the namespace's image of `k`).
pub fn idmapped_tree(path: &Path, userns: &OwnedFd) -> io::Result<OwnedFd> {
    let c = cpath(path)?;
    #[allow(unsafe_code)]
    // SAFETY: open_tree and mount_setattr take a C string and a struct that live across the calls; the
    // descriptor returned is ours.
    unsafe {
        let fd = check(
            libc::syscall(
                libc::SYS_open_tree,
                libc::AT_FDCWD,
                c.as_ptr(),
                OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
            ),
            "cloning the mount of",
            path,
        )?;
        let fd = OwnedFd::from_raw_fd(fd as i32);
        let attr = MountAttr {
            attr_set: MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
            attr_clr: 0,
            propagation: 0,
            userns_fd: userns.as_raw_fd() as u64,
        };
        check(
            libc::syscall(
                libc::SYS_mount_setattr,
                fd.as_raw_fd(),
                c"".as_ptr(),
                libc::AT_EMPTY_PATH,
                &attr as *const MountAttr,
                std::mem::size_of::<MountAttr>(),
            ),
            "mapping the ids of",
            path,
        )?;
        Ok(fd)
    }
}

/// Mounts a read-only overlay of `lowers` (detached mounts, the top layer first) at `target`.
pub fn overlay_of(lowers: &[OwnedFd], target: &Path) -> io::Result<()> {
    #[allow(unsafe_code)]
    // SAFETY: fsopen/fsconfig/fsmount/move_mount with C strings and descriptors that live across the
    // calls; every descriptor returned is ours.
    unsafe {
        let fs = check(
            libc::syscall(libc::SYS_fsopen, c"overlay".as_ptr(), FSOPEN_CLOEXEC),
            "opening overlayfs for",
            target,
        )?;
        let fs = OwnedFd::from_raw_fd(fs as i32);
        for l in lowers {
            check(
                libc::syscall(
                    libc::SYS_fsconfig,
                    fs.as_raw_fd(),
                    FSCONFIG_SET_FD,
                    c"lowerdir+".as_ptr(),
                    std::ptr::null::<libc::c_void>(),
                    l.as_raw_fd(),
                ),
                "adding a layer (overlayfs needs Linux 6.8 or later for idmapped roots) to",
                target,
            )?;
        }
        check(
            libc::syscall(
                libc::SYS_fsconfig,
                fs.as_raw_fd(),
                FSCONFIG_CMD_CREATE,
                std::ptr::null::<libc::c_char>(),
                std::ptr::null::<libc::c_void>(),
                0,
            ),
            "creating the overlay for",
            target,
        )?;
        let m = check(
            libc::syscall(
                libc::SYS_fsmount,
                fs.as_raw_fd(),
                FSMOUNT_CLOEXEC,
                MOUNT_ATTR_RDONLY | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOSUID,
            ),
            "mounting the overlay for",
            target,
        )?;
        let m = OwnedFd::from_raw_fd(m as i32);
        attach(m, target)
    }
}

/// Attaches a detached mount at `target` (which must exist, of the same kind: file or directory).
pub fn attach(tree: OwnedFd, target: &Path) -> io::Result<()> {
    let c = cpath(target)?;
    #[allow(unsafe_code)]
    // SAFETY: move_mount with a descriptor we own and a C string that lives across the call.
    unsafe {
        check(
            libc::syscall(
                libc::SYS_move_mount,
                tree.as_raw_fd(),
                c"".as_ptr(),
                libc::AT_FDCWD,
                c.as_ptr(),
                MOVE_MOUNT_F_EMPTY_PATH,
            ),
            "attaching a mount at",
            target,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// Mounts only in a mount namespace of the test's own (a forked child), never on the host.
    fn in_private_mounts(f: impl FnOnce() -> Result<(), String>) {
        #[allow(unsafe_code)]
        // SAFETY: the child runs `f` and exits; the test harness thread that forked waits for it. The
        // child may allocate: a test process forking from one test thread is acceptable here.
        unsafe {
            let pid = libc::fork();
            if pid == 0 {
                let ok = libc::unshare(libc::CLONE_NEWNS) == 0
                    && libc::mount(
                        std::ptr::null(),
                        c"/".as_ptr(),
                        std::ptr::null(),
                        libc::MS_REC | libc::MS_PRIVATE,
                        std::ptr::null(),
                    ) == 0;
                let code = match ok.then(f) {
                    Some(Ok(())) => 0,
                    Some(Err(e)) => {
                        let _ = std::fs::write("/dev/stderr", format!("{e}\n"));
                        1
                    }
                    None => 2,
                };
                libc::_exit(code);
            }
            let mut status = 0;
            libc::waitpid(pid, &mut status, 0);
            assert!(
                libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                "child failed"
            );
        }
    }

    #[test]
    fn an_idmapped_overlay_shows_layers_owned_by_the_mapped_ids() {
        #[allow(unsafe_code)]
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        assert!(
            root,
            "idmapped mounts need root: run the tests as root, as CI does"
        );
        let dir = tempfile::tempdir().unwrap();
        let (upper, lower, target) = (
            dir.path().join("l1"),
            dir.path().join("l2"),
            dir.path().join("root"),
        );
        for d in [&upper, &lower, &target] {
            std::fs::create_dir(d).unwrap();
        }
        std::fs::write(upper.join("top"), "1").unwrap();
        std::fs::write(lower.join("bottom"), "2").unwrap();
        std::os::unix::fs::chown(lower.join("bottom"), Some(1000), Some(1000)).unwrap();
        let ns = crate::userns::create("0 1879048192 65536\n", "0 1879048192 65536\n").unwrap();
        in_private_mounts(|| {
            let l1 = idmapped_tree(&upper, &ns).map_err(|e| e.to_string())?;
            let l2 = idmapped_tree(&lower, &ns).map_err(|e| e.to_string())?;
            overlay_of(&[l1, l2], &target).map_err(|e| e.to_string())?;
            let top = std::fs::metadata(target.join("top")).map_err(|e| e.to_string())?;
            let bottom = std::fs::metadata(target.join("bottom")).map_err(|e| e.to_string())?;
            if top.uid() != 1_879_048_192 || bottom.uid() != 1_879_049_192 {
                return Err(format!("owners {} and {}", top.uid(), bottom.uid()));
            }
            if std::fs::write(target.join("new"), "x").is_ok() {
                return Err("the root is writable".into());
            }
            Ok(())
        });
        // Nothing was mounted on the host.
        assert!(!target.join("top").exists());
    }
}
