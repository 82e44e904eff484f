//! Pull progress: an indicatif bar (bytes, rate, ETA, active blobs) when stderr is a terminal,
//! plain lines otherwise; counters for the summary.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Progress of one pull, shared by the download threads.
pub struct Progress {
    bar: Option<ProgressBar>,
    quiet: bool,
    bytes: AtomicU64,
    active: AtomicUsize,
    done: AtomicUsize,
    total_blobs: AtomicUsize,
}

fn human(n: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < U.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

impl Progress {
    /// A bar when stderr is a terminal (and not `quiet`), else plain lines (none when `quiet`).
    pub fn new(quiet: bool) -> Progress {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let b = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            b.set_style(
                ProgressStyle::with_template(
                    "{bytes:>10}/{total_bytes:10} {bytes_per_sec:>12} ETA {eta:>4} [{wide_bar}] {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            b
        });
        Progress {
            bar,
            quiet,
            bytes: AtomicU64::new(0),
            active: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            total_blobs: AtomicUsize::new(0),
        }
    }

    /// A progress that shows nothing.
    pub fn hidden() -> Progress {
        Progress::new(true)
    }

    /// Sets what is to be downloaded.
    pub fn start(&self, blobs: usize, bytes: u64) {
        self.total_blobs.store(blobs, Ordering::Relaxed);
        if let Some(b) = &self.bar {
            b.set_length(bytes);
        }
        if blobs > 0 {
            self.line(&format!("fetching {blobs} blobs, {}", human(bytes)));
        }
    }

    /// Counts bytes received.
    pub fn bytes(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }

    /// Bytes received so far (including bytes received again after a failure).
    pub fn total_bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    fn update_msg(&self) {
        if let Some(b) = &self.bar {
            b.set_message(format!(
                "{}/{} blobs, {} active",
                self.done.load(Ordering::Relaxed),
                self.total_blobs.load(Ordering::Relaxed),
                self.active.load(Ordering::Relaxed)
            ));
        }
    }

    /// A blob download starts.
    pub fn blob_started(&self) {
        self.active.fetch_add(1, Ordering::Relaxed);
        self.update_msg();
    }

    /// A blob download ended (stored or failed).
    pub fn blob_finished(&self, line: Option<String>) {
        self.active.fetch_sub(1, Ordering::Relaxed);
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        self.update_msg();
        if let Some(l) = line {
            if self.bar.is_none() {
                let total = self.total_blobs.load(Ordering::Relaxed);
                self.line(&format!("[{done}/{total}] {l}"));
            }
        }
    }

    /// A message line (above the bar, or on stderr).
    pub fn line(&self, msg: &str) {
        if self.quiet {
            return;
        }
        match &self.bar {
            Some(b) => b.println(msg),
            None => eprintln!("{msg}"),
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// Human-readable size.
pub fn size(n: u64) -> String {
    human(n)
}
