//! Capabilities: a container's processes keep Docker's default set less `NET_RAW` (raw sockets, ARP
//! and ICMP spoofing) and `MKNOD` (device nodes), which a web service has no use for; host processes
//! keep none at all (their bounding set is emptied before `exec`). In gen2 these hold only inside the
//! container's user namespace: its root is an unprivileged user of the host.

/// The capabilities of a container's processes (OCI names).
pub const CONTAINER: [&str; 12] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];
