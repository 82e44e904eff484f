//! The compose stage's input is a list of entries whose bytes come from sources, not only a
//! directory walk: a byte range of another file, a generator of known length and in-memory bytes
//! land in the image exactly (checked by xfs_repair, GRUB, the kernel mount as root and verify),
//! without staging copies; files at increasing offsets of a stream (a decompressed layer) are
//! read in one pass of it and checked at its end; and a generator that breaks its promise, or a
//! stream failing its end check, fails the compose cleanly.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use prestage::compose::compose_contents;
use prestage::compose::content::{Content, Entry, Source};
use prestage::compose::emit::Format;
use prestage::compose::layout::Layout;

const LAYOUT: &str = "[disk]\nsize = \"1GiB\"\nguid = \"0b5f6c1e-0000-4000-8000-000000000001\"\n\n\
[[partition]]\nlabel = \"data\"\nanchor = \"end\"\nsize = \"700MiB\"\nfilesystem = \"xfs\"\n\
fs_uuid = \"0b5f6c1e-0000-4000-8000-000000000002\"\n";

fn pattern(i: u64) -> u8 {
    (i.wrapping_mul(2654435761) >> 13) as u8
}

fn generator(len: u64) -> Source {
    Source::Generated(Arc::new(
        move |sink: &mut dyn FnMut(&[u8]) -> anyhow::Result<()>| {
            let mut buf = Vec::with_capacity(1 << 20);
            let mut i = 0u64;
            while i < len {
                buf.clear();
                let n = (len - i).min(1 << 20);
                buf.extend((i..i + n).map(pattern));
                sink(&buf)?;
                i += n;
            }
            Ok(())
        },
    ))
}

#[test]
fn ranges_generators_and_bytes_land_exactly() {
    let dir = common::scratch("sources");
    let layout_path = common::write_layout(dir.path(), "sources.toml", LAYOUT);
    let layout = Layout::load(&layout_path).expect("layout");

    // A "blob file" holding three members back to back, as an archive or a store would.
    let blob = dir.path().join("blobs.bin");
    let members: Vec<Vec<u8>> = vec![
        common::small_bytes(1, 5000),
        common::small_bytes(2, 3 << 20),
        common::small_bytes(3, 1),
    ];
    std::fs::write(&blob, members.concat()).expect("writing blobs.bin");

    let expected = dir.path().join("expected");
    let mut content = Content::new();
    let mut offset = 0u64;
    for (i, m) in members.iter().enumerate() {
        let path = format!("blobs/member-{i}");
        content
            .add(Entry::file(
                &path,
                0o644,
                m.len() as u64,
                Source::Range {
                    path: blob.clone(),
                    offset,
                },
            ))
            .expect("adding a range");
        common::put_file(&expected.join(&path), m, 0o644);
        offset += m.len() as u64;
    }
    let gen_len = 45 * 1024 * 1024 + 17;
    content
        .add(Entry::file(
            "generated/big.bin",
            0o600,
            gen_len,
            generator(gen_len),
        ))
        .expect("adding a generator");
    common::put_file(
        &expected.join("generated/big.bin"),
        &(0..gen_len).map(pattern).collect::<Vec<_>>(),
        0o600,
    );
    let text = b"made in memory\n".to_vec();
    content
        .add(Entry::file(
            "generated/notes.txt",
            0o644,
            text.len() as u64,
            Source::Bytes(Arc::new(text.clone())),
        ))
        .expect("adding bytes");
    common::put_file(&expected.join("generated/notes.txt"), &text, 0o644);
    // Directories made implicitly by `add` are 0755, like the expected tree's.
    for d in ["blobs", "generated"] {
        common::put_dir(&expected.join(d), 0o755);
    }

    let img = dir.path().join("sources.raw");
    let contents = BTreeMap::from([("data".to_string(), content)]);
    let s = compose_contents(&layout, contents, &img, Format::Raw, 1_700_000_000)
        .expect("compose_contents");
    assert_eq!(s.verified.len(), 1);
    assert_eq!(s.verified[0].files, 5, "{s:?}");
    common::check_xfs_image(&img, &layout_path, "data", &expected, |_| {});
}

#[test]
fn a_generator_that_breaks_its_promise_fails_cleanly() {
    let dir = common::scratch("sources-bad");
    let layout_path = common::write_layout(dir.path(), "sources.toml", LAYOUT);
    let layout = Layout::load(&layout_path).expect("layout");
    let mut content = Content::new();
    content
        .add(Entry::file("short.bin", 0o644, 4096, generator(4000)))
        .expect("adding");
    let img = dir.path().join("bad.raw");
    let err = compose_contents(
        &layout,
        BTreeMap::from([("data".to_string(), content)]),
        &img,
        Format::Raw,
        0,
    )
    .expect_err("a short generator must fail the compose");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("short.bin") && msg.contains("4000") && msg.contains("4096"),
        "{msg}"
    );
    common::assert_no_output(dir.path(), "bad.raw");
}

/// A stream of pattern bytes that counts how often it is opened and checked to its end.
struct Counted {
    len: u64,
    opened: Arc<std::sync::atomic::AtomicUsize>,
    finished: Arc<std::sync::atomic::AtomicUsize>,
    /// Fails the check at the end (a layer whose digest does not match).
    damaged: bool,
}

struct CountedReader {
    at: u64,
    len: u64,
    finished: Arc<std::sync::atomic::AtomicUsize>,
    damaged: bool,
}

impl std::io::Read for CountedReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (self.len - self.at).min(buf.len() as u64) as usize;
        for (k, b) in buf[..n].iter_mut().enumerate() {
            *b = pattern(self.at + k as u64);
        }
        self.at += n as u64;
        Ok(n)
    }
}

impl prestage::compose::content::StreamReader for CountedReader {
    fn finish(self: Box<Self>) -> anyhow::Result<()> {
        let mut me = *self;
        std::io::copy(&mut me, &mut std::io::sink())?;
        me.finished
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if me.damaged {
            anyhow::bail!("layer sha256:0000: the stream's digest does not match");
        }
        Ok(())
    }
}

impl prestage::compose::content::Streamed for Counted {
    fn open(&self) -> anyhow::Result<Box<dyn prestage::compose::content::StreamReader>> {
        self.opened
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(Box::new(CountedReader {
            at: 0,
            len: self.len,
            finished: Arc::clone(&self.finished),
            damaged: self.damaged,
        }))
    }
    fn describe(&self) -> String {
        "a counted stream".into()
    }
}

/// Files whose bytes lie at increasing offsets of a stream (a decompressed layer) are read in
/// one pass of it, checked at its end, and land exactly; a stream whose check fails at the end
/// fails the compose, naming it, with nothing at the output path.
#[test]
fn files_of_a_stream_are_read_in_one_pass_and_checked_at_its_end() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let dir = common::scratch("streams");
    let layout_path = common::write_layout(dir.path(), "streams.toml", LAYOUT);
    let layout = Layout::load(&layout_path).expect("layout");
    let expected = dir.path().join("expected");
    let opened = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    let stream_len = 40 << 20;
    let build = |damaged: bool| -> (Content, Arc<dyn prestage::compose::content::Streamed>) {
        let s: Arc<dyn prestage::compose::content::Streamed> = Arc::new(Counted {
            len: stream_len,
            opened: Arc::clone(&opened),
            finished: Arc::clone(&finished),
            damaged,
        });
        let mut content = Content::new();
        // Members with gaps between them (headers, skipped entries), one spanning chunks.
        let mut at = 512u64;
        for (i, len) in [1000u64, 9 << 20, 0, 1, 12 << 20, 4096]
            .into_iter()
            .enumerate()
        {
            let path = format!("layer/file-{i}");
            content
                .add(Entry::file(
                    &path,
                    0o644,
                    len,
                    Source::Stream {
                        stream: Arc::clone(&s),
                        offset: at,
                    },
                ))
                .expect("adding a stream member");
            let bytes: Vec<u8> = (at..at + len).map(pattern).collect();
            common::put_file(&expected.join(&path), &bytes, 0o644);
            at += len + 1024;
        }
        (content, s)
    };
    let (content, _s) = build(false);
    let out = dir.path().join("streams.raw");
    let mut contents = BTreeMap::new();
    contents.insert("data".to_string(), content);
    compose_contents(&layout, contents, &out, Format::Raw, 1_700_000_000).expect("compose");
    assert_eq!(
        opened.load(Ordering::SeqCst),
        1,
        "the stream was read more than once"
    );
    assert_eq!(
        finished.load(Ordering::SeqCst),
        1,
        "the stream was not checked at its end"
    );
    common::verify_ok(&out);
    let part = common::locate(&out, &layout_path, "data");
    common::assert_grub_cmp(&out, part, &expected, &Default::default());
    note!("6 files of one 40 MiB stream: opened once, checked at its end, every byte in place");

    let (content, _s) = build(true);
    let bad = dir.path().join("bad.raw");
    let mut contents = BTreeMap::new();
    contents.insert("data".to_string(), content);
    let e = compose_contents(&layout, contents, &bad, Format::Raw, 1_700_000_000)
        .expect_err("a stream that fails its check");
    let e = format!("{e:#}");
    assert!(
        e.contains("digest does not match") && e.contains("a counted stream"),
        "{e}"
    );
    common::assert_no_output(dir.path(), "bad.raw");
    note!("a stream failing its end check: {e}");
}
