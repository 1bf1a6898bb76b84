//! The process's memory allocator, set for a stream of large buffers.
//!
//! HTTP/2 hands each received frame on as a slice of the connection's read
//! buffer, so while the reader converts rows the connection keeps reading
//! into fresh buffers of a frame or more (up to 256 KiB, see
//! `psdb::client`). glibc serves any allocation over its mmap threshold
//! (128 KiB at start) with a new mapping and unmaps it on free, so every
//! page of every such buffer was a page fault: 57,000 to 100,000 faults
//! and about a sixth of the tap's CPU in a one-million-row copy. Raising
//! the threshold keeps these buffers in the heap, where a freed one is
//! reused: about 3,000 faults for the same copy, peak RSS unchanged.
//!
//! mimalloc was tried instead: as fast, but it held 50 to 70 MiB where
//! glibc holds 19.

/// Buffers up to this size come from the heap rather than from fresh
/// mappings: well above a 256 KiB frame and gRPC's usual messages, and
/// far below the 32 MiB where glibc refuses the setting.
const MMAP_THRESHOLD: i32 = 4 * 1024 * 1024;

/// Free memory at the top of a heap that glibc keeps rather than hands
/// back to the system (128 KiB by default): a few frames' worth, so that
/// reading ahead and falling behind do not map and unmap the same pages.
const TRIM_THRESHOLD: i32 = 16 * 1024 * 1024;

/// Sets the allocator's parameters; returns whether glibc took both (only
/// a mis-set constant makes it refuse, and a refusal costs speed, not
/// correctness). Call once, before the runtime's threads start.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn tune() -> bool {
    // SAFETY: mallopt(3) takes two integers and no pointers; it changes
    // allocator parameters under the allocator's own lock, so it cannot
    // touch memory the program owns, and glibc validates both arguments
    // (returning 0 for a value out of range, which the test below would
    // catch). It is called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    }
}

/// Other allocators need no tuning here.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn tune() -> bool {
    true
}

#[cfg(test)]
mod tests {
    #[test]
    fn glibc_takes_the_setting() {
        assert!(super::tune(), "mallopt refused a setting");
    }
}
