//! The server's memory allocator settings, made before any thread starts.
//!
//! glibc's malloc gives threads arenas of their own, up to eight per core by default, and keeps what they
//! freed for reuse by the same arena. The server's threads (async workers, the store's and the route
//! publisher's blocking threads) allocate and free whole routing tables and store reads, so each arena
//! ends up holding a copy of the server's peak: measured with `bench/scale.sh` at 1,000 services, the
//! server's RSS was 169 MB with glibc's default and 108 MB with two arenas, while its live heap (counted
//! by heaptrack) stayed near 21 MB. The cap is one arena per core, at least two.

/// Caps glibc's malloc arenas at one per core (at least two). Call first thing in the server's `run`,
/// before its runtime starts threads. A no-op on other C libraries.
pub(crate) fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let arenas = libc::c_int::try_from(cores.max(2)).unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt only changes malloc's parameters; called before the runtime's threads start,
        // and it returns 0 (ignored: the default stays) when the value is refused.
        #[allow(unsafe_code)]
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, arenas);
        }
    }
}
