//! What an instance may do, written once for every runtime (STYLE.md's "isolation policy as data"):
//!
//! - [`seccomp`]: the system-call allow-list, kept as data in `policy/seccomp.json`, rendered for runc
//!   and runsc and compiled to BPF for host processes;
//! - [`caps`]: the capabilities containers keep;
//! - [`paths`]: Docker's masked and read-only paths, and what of the host a process instance must not see;
//! - [`ids`]: the host uid/gid range of the installation, one block of 65536 per service;
//! - [`userns`]: user namespaces used as id mappings for idmapped mounts and to own containers'
//!   network namespaces; [`mounts`]: idmapped image roots;
//! - [`fsview`]: a host process instance's view of the filesystem;
//! - [`launch`]: `fork` and `exec` of a host process into all of the above.
//!
//! Architecture invariant: nothing here knows about revisions, HTTP or the store; runtimes give it paths,
//! ids and descriptors. The system calls that build a sandbox live here and nowhere else.

pub mod caps;
pub mod fsview;
pub mod ids;
pub mod launch;
pub mod mounts;
pub mod net;
pub mod paths;
pub mod seccomp;
pub mod userns;

pub use fsview::{HostView, PierFiles};
pub use ids::{IdBlock, IdRange};
pub use launch::{Launch, LaunchError, Spawned};
pub use seccomp::{Arch, Profile, Program};
