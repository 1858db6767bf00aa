//! The binary's memory allocator, mimalloc, and the one setting `sealbus serve` changes.
//!
//! The broker allocates and frees many small buffers per message (frames, queue entries); under
//! load glibc's malloc took a quarter of the server's CPU time, mimalloc a fraction of that
//! (docs/PERFORMANCE.md). Only the binary sets it: an app embedding the library keeps its own.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The environment variable mimalloc reads, when the process starts, for how long freed memory
/// stays with the process before it is returned to the OS.
pub(crate) const PURGE_DELAY_VARIABLE: &str = "MIMALLOC_PURGE_DELAY";

/// The delay `sealbus serve` runs with unless [`PURGE_DELAY_VARIABLE`] is set, in ms.
///
/// mimalloc's own default is 1 s; with it, pages freed under load were returned to the OS and
/// faulted back in (zeroed by the kernel) over and over: 10–17% more server CPU per QoS 1 message
/// (docs/PERFORMANCE.md). The cost of the longer delay is memory: what a burst freed goes back
/// to the OS after 10 s instead of 1 s.
pub(crate) const SERVE_PURGE_DELAY_MS: &str = "10000";

/// Runs this same command again, in this same process, with [`PURGE_DELAY_VARIABLE`] set to
/// [`SERVE_PURGE_DELAY_MS`], unless it is already set. mimalloc reads its options only when the
/// process starts, and setting one afterwards takes an `unsafe` call this crate does not make;
/// replacing the process image (the process id stays) is the safe way. Returns only if that
/// failed (then the server runs with mimalloc's default), with the reason.
pub(crate) fn rerun_with_purge_delay() -> Option<std::io::Error> {
    if std::env::var_os(PURGE_DELAY_VARIABLE).is_some() {
        return None;
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt as _;
        let program = match std::env::current_exe() {
            Ok(program) => program,
            Err(err) => return Some(err),
        };
        let err = std::process::Command::new(program)
            .args(std::env::args_os().skip(1))
            .env(PURGE_DELAY_VARIABLE, SERVE_PURGE_DELAY_MS)
            .exec();
        Some(err)
    }
    #[cfg(not(unix))]
    None
}
