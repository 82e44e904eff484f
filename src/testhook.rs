//! A pause hook for the test suite, not a user feature: with `PRESTAGE_TEST_PAUSE_AFTER_BYTES=N`
//! in its environment, the process stops itself with SIGSTOP once it has written N bytes in
//! total into disk images and store blobs (only into one of them with
//! `PRESTAGE_TEST_PAUSE_IN=image` or `=store`). A test can then look at (or SIGKILL) a run that is
//! provably in the middle of writing, without depending on timing, and let it go on with SIGCONT.
//! It fires once per process; without the variable it does nothing. It is in every build
//! because the tests run the release binary, as users do.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;

/// The environment variable (test use only).
pub const PAUSE_AFTER_BYTES: &str = "PRESTAGE_TEST_PAUSE_AFTER_BYTES";
/// Which writes count: `image`, `store`, or (unset) both.
pub const PAUSE_IN: &str = "PRESTAGE_TEST_PAUSE_IN";

/// What was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A disk image.
    Image,
    /// A store blob.
    Store,
}

static LIMIT: OnceLock<Option<u64>> = OnceLock::new();
static ONLY: OnceLock<Option<Target>> = OnceLock::new();
static WRITTEN: AtomicU64 = AtomicU64::new(0);
static FIRED: AtomicBool = AtomicBool::new(false);

/// Counts `n` bytes just written `into` an image or the store; stops the process once the
/// limit is reached.
pub fn wrote(into: Target, n: u64) {
    let limit = *LIMIT.get_or_init(|| {
        std::env::var(PAUSE_AFTER_BYTES)
            .ok()
            .and_then(|v| v.trim().parse().ok())
    });
    let Some(limit) = limit else { return };
    let only = *ONLY.get_or_init(|| match std::env::var(PAUSE_IN).ok().as_deref() {
        Some("image") => Some(Target::Image),
        Some("store") => Some(Target::Store),
        _ => None,
    });
    if only.is_some_and(|o| o != into) {
        return;
    }
    let total = WRITTEN.fetch_add(n, Ordering::Relaxed) + n;
    if total >= limit && !FIRED.swap(true, Ordering::Relaxed) {
        eprintln!("prestage: {PAUSE_AFTER_BYTES}: stopping after {total} bytes written");
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::STOP);
    }
}
