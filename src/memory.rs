//! Memory given back to the system. With glibc's allocator, an exporter's resident memory
//! is mostly freed memory it keeps: one arena per thread that ever allocated (the tokio
//! workers, the blocking pool writing the state file), and the pages freed after a
//! large poll (the first one lists every open chat) or a re-encoded exposition, which
//! stay resident until something asks for them back.

/// Caps glibc's arenas at two, before any thread starts: threads share them instead of
/// each keeping its own freed memory.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Returns the freed pages of every arena to the system: a walk of the free lists,
/// counted in the idle poll's CPU of the README's Performance table. Called after each
/// poll.
pub fn release_freed() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases memory the allocator holds free.
    unsafe {
        libc::malloc_trim(0);
    }
}
