//! Progress for people, at any scale: on a terminal, one live line (the stage, bytes done of the
//! total, rate, ETA, what is under way); without a terminal, one line per stage and none per
//! blob or image. `-v` adds a line per item (each blob fetched, each image recorded); `-q`
//! prints nothing but errors. The counters feed the summaries.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How much a run says on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    /// Errors only.
    Quiet,
    /// A live line on a terminal, one line per stage otherwise.
    Normal,
    /// Also a line per blob and per image.
    Verbose,
}

impl Verbosity {
    /// From the `-q` and `-v` flags (`-q` wins).
    pub fn from_flags(quiet: bool, verbose: bool) -> Verbosity {
        match (quiet, verbose) {
            (true, _) => Verbosity::Quiet,
            (false, true) => Verbosity::Verbose,
            (false, false) => Verbosity::Normal,
        }
    }
}

/// Progress of one run, shared by its threads.
pub struct Progress {
    bar: Option<ProgressBar>,
    verbosity: Verbosity,
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
    /// Normal progress, or none when `quiet`.
    pub fn new(quiet: bool) -> Progress {
        Progress::with(Verbosity::from_flags(quiet, false))
    }

    /// Progress at `verbosity`: the live line when stderr is a terminal.
    pub fn with(verbosity: Verbosity) -> Progress {
        let bar = (verbosity > Verbosity::Quiet && std::io::stderr().is_terminal()).then(|| {
            let b = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            b.set_style(
                ProgressStyle::with_template(
                    "{prefix:>7} {bytes:>10}/{total_bytes:10} {bytes_per_sec:>12} ETA {eta:>4} \
                     [{wide_bar}] {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            b
        });
        Progress {
            bar,
            verbosity,
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

    /// How much this run says.
    pub fn verbosity(&self) -> Verbosity {
        self.verbosity
    }

    /// A stage of `total` bytes begins: the live line shows it from zero; without a terminal,
    /// one line says it (`{stage}: {what}`). The byte counter starts again.
    pub fn stage(&self, stage: &str, total: u64, what: &str) {
        self.bytes.store(0, Ordering::Relaxed);
        match &self.bar {
            Some(b) => {
                b.set_prefix(stage.to_string());
                b.set_length(total);
                b.set_position(0);
                b.reset_eta();
                b.set_message(what.to_string());
            }
            None => self.line(&format!("{stage}: {what}")),
        }
    }

    /// The pull stage: `blobs` blobs of `bytes` in all to fetch (nothing said when none).
    pub fn start(&self, blobs: usize, bytes: u64) {
        self.total_blobs.store(blobs, Ordering::Relaxed);
        self.done.store(0, Ordering::Relaxed);
        if blobs > 0 {
            self.stage(
                "pull",
                bytes,
                &format!("fetching {blobs} blobs, {}", human(bytes)),
            );
        } else {
            self.bytes.store(0, Ordering::Relaxed);
        }
    }

    /// Counts bytes done in the current stage.
    pub fn bytes(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }

    /// Bytes counted in the current stage (a pull's: including bytes received again after a
    /// failure).
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

    /// A blob download ended (stored or failed); `line` says what was fetched (`-v`).
    pub fn blob_finished(&self, line: Option<String>) {
        self.active.fetch_sub(1, Ordering::Relaxed);
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        self.update_msg();
        if let Some(l) = line {
            let total = self.total_blobs.load(Ordering::Relaxed);
            self.detail(&format!("[{done}/{total}] {l}"));
        }
    }

    /// A line for people (above the live line, or on stderr), unless quiet.
    pub fn line(&self, msg: &str) {
        if self.verbosity == Verbosity::Quiet {
            return;
        }
        match &self.bar {
            Some(b) => b.println(msg),
            None => eprintln!("{msg}"),
        }
    }

    /// A line about one item (a blob, an image): with `-v` only.
    pub fn detail(&self, msg: &str) {
        if self.verbosity == Verbosity::Verbose {
            self.line(msg);
        }
    }

    /// Removes the live line.
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
