//! Interrupt cleanup: temporary outputs and work directories are registered here, and SIGINT,
//! SIGTERM or SIGHUP removes them before exiting, so an interrupted compose leaves neither a
//! partial image nor a partition-sized work file behind. (SIGKILL cannot be caught: the temporary
//! names then remain, never anything at the output path, and the next run for the same output
//! removes them: see `compose::output`.)

use std::path::{Path, PathBuf};
use std::sync::Mutex;

static PATHS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Installs the signal handler (once, at program start).
pub fn install() -> anyhow::Result<()> {
    ctrlc::set_handler(|| {
        let paths = PATHS.lock().map(|p| p.clone()).unwrap_or_default();
        // Newest first: a run's temporary files go before the lock that makes them its own.
        for p in paths.iter().rev() {
            if p.is_dir() {
                let _ = std::fs::remove_dir_all(p);
            } else {
                let _ = std::fs::remove_file(p);
            }
        }
        eprintln!("prestage: interrupted; temporary files removed");
        std::process::exit(130);
    })
    .map_err(|e| anyhow::anyhow!("installing the interrupt handler: {e}"))
}

/// Registers a temporary path to remove on interrupt.
pub fn register(path: &Path) {
    if let Ok(mut p) = PATHS.lock() {
        p.push(path.to_path_buf());
    }
}

/// Forgets a path (it was renamed into place or removed).
pub fn forget(path: &Path) {
    if let Ok(mut p) = PATHS.lock() {
        p.retain(|q| q != path);
    }
}
