//! The compose stage's input is a list of entries whose bytes come from sources, not only a
//! directory walk: a byte range of another file, a generator of known length and in-memory bytes
//! land in the image exactly (checked by xfs_repair, GRUB, the kernel mount as root and verify),
//! without staging copies; and a generator that breaks its promise fails the compose cleanly.

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
