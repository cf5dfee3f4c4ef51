//! User namespaces used as id mappings for idmapped mounts (`mount_setattr` with `MOUNT_ATTR_IDMAP`):
//! a file owned by id `k` on disk shows as the map's image of `k`. Nothing ever runs inside these
//! namespaces; a short-lived child creates one, the server writes its maps and keeps a descriptor.
//!
//! Making one costs a fork (a few hundred microseconds), so [`UserNsCache`] keeps one per mapping.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

/// A user namespace with `uid_map` and `gid_map` written (each one or more `INSIDE OUTSIDE COUNT`
/// lines). Blocking; needs root.
pub fn create(uid_map: &str, gid_map: &str) -> io::Result<OwnedFd> {
    let (ready_r, ready_w) = pipe()?;
    #[allow(unsafe_code)]
    // SAFETY: the child only makes async-signal-safe system calls (unshare, write, pause, _exit) on
    // memory that exists before the fork; it allocates nothing and takes no lock.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        #[allow(unsafe_code)]
        // SAFETY: see above; the child never returns.
        unsafe {
            let ok: u8 = if libc::unshare(libc::CLONE_NEWUSER) == 0 {
                1
            } else {
                0
            };
            libc::write(ready_w.as_raw_fd(), (&ok as *const u8).cast(), 1);
            loop {
                libc::pause();
            }
        }
    }
    drop(ready_w);
    let result = (|| {
        let mut byte = [0u8; 1];
        let n = read_fd(&ready_r, &mut byte)?;
        if n != 1 || byte[0] != 1 {
            return Err(io::Error::other(
                "cannot create a user namespace (is the server root, and are user namespaces enabled?)",
            ));
        }
        std::fs::write(format!("/proc/{pid}/uid_map"), uid_map)?;
        std::fs::write(format!("/proc/{pid}/gid_map"), gid_map)?;
        let f = std::fs::File::open(format!("/proc/{pid}/ns/user"))?;
        Ok(OwnedFd::from(f))
    })();
    #[allow(unsafe_code)]
    // SAFETY: plain system calls on the child's pid.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
    }
    result
}

/// A new network namespace owned by `userns`, so a container that joins both namespaces can mount its
/// own sysfs (the kernel allows that only to the owner of the network namespace). Blocking; needs root.
pub fn netns_in(userns: &OwnedFd) -> io::Result<OwnedFd> {
    let (ready_r, ready_w) = pipe()?;
    let user = userns.as_raw_fd();
    #[allow(unsafe_code)]
    // SAFETY: the child only makes async-signal-safe system calls (setns, unshare, write, pause) on
    // memory that exists before the fork; it allocates nothing and takes no lock.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        #[allow(unsafe_code)]
        // SAFETY: see above; the child never returns.
        unsafe {
            let ok: u8 = if libc::setns(user, libc::CLONE_NEWUSER) == 0
                && libc::unshare(libc::CLONE_NEWNET) == 0
            {
                1
            } else {
                0
            };
            libc::write(ready_w.as_raw_fd(), (&ok as *const u8).cast(), 1);
            loop {
                libc::pause();
            }
        }
    }
    drop(ready_w);
    let result = (|| {
        let mut byte = [0u8; 1];
        if read_fd(&ready_r, &mut byte)? != 1 || byte[0] != 1 {
            return Err(io::Error::other(
                "cannot create a network namespace in the service's user namespace",
            ));
        }
        Ok(OwnedFd::from(std::fs::File::open(format!(
            "/proc/{pid}/ns/net"
        ))?))
    })();
    #[allow(unsafe_code)]
    // SAFETY: plain system calls on the child's pid.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
    }
    result
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    #[allow(unsafe_code)]
    // SAFETY: pipe2 fills the two descriptors it is given; we own them afterwards.
    unsafe {
        if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])))
    }
}

fn read_fd(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        #[allow(unsafe_code)]
        // SAFETY: reads into a buffer we own, of the length given.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// User namespaces by mapping, made once each.
#[derive(Default)]
pub struct UserNsCache {
    made: Mutex<HashMap<(String, String), Arc<OwnedFd>>>,
}

impl std::fmt::Debug for UserNsCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.made.lock().map(|m| m.len()).unwrap_or(0);
        f.debug_struct("UserNsCache")
            .field("namespaces", &n)
            .finish()
    }
}

impl UserNsCache {
    /// The namespace with these maps, made on first use. Blocking.
    pub fn get(&self, uid_map: &str, gid_map: &str) -> io::Result<Arc<OwnedFd>> {
        let key = (uid_map.to_owned(), gid_map.to_owned());
        if let Some(fd) = self
            .made
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(fd.clone());
        }
        let fd = Arc::new(create(uid_map, gid_map)?);
        self.made
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, fd.clone());
        Ok(fd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_keeps_its_maps_after_its_creator_is_gone() {
        assert!(
            nix_is_root(),
            "user namespaces for idmapped mounts need root: run the tests as root, as CI does"
        );
        let fd = create("0 1879048192 65536\n", "0 1879048192 65536\n").unwrap();
        let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap();
        assert!(link.to_string_lossy().starts_with("user:["), "{link:?}");
        let cache = UserNsCache::default();
        let a = cache.get("0 2000000000 1\n", "0 2000000000 1\n").unwrap();
        let b = cache.get("0 2000000000 1\n", "0 2000000000 1\n").unwrap();
        assert!(Arc::ptr_eq(&a, &b), "one namespace per mapping");
    }

    fn nix_is_root() -> bool {
        #[allow(unsafe_code)]
        // SAFETY: geteuid has no preconditions.
        unsafe {
            libc::geteuid() == 0
        }
    }
}
