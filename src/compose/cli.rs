//! `prestage compose` and `prestage verify`: argument definitions and printing; the work is in
//! `pipeline` and [`super::verify`].

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};

use super::content::Owners;
use super::emit::{self, Format};
use super::{layout, verify};

/// An image format on the command line.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum FormatArg {
    /// Sparse raw image.
    Raw,
    /// qcow2.
    Qcow2,
}

impl From<FormatArg> for Format {
    fn from(f: FormatArg) -> Format {
        match f {
            FormatArg::Raw => Format::Raw,
            FormatArg::Qcow2 => Format::Qcow2,
        }
    }
}

/// Who owns the content's files in the image.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum OwnersArg {
    /// Every entry owned by root (0:0).
    Root,
    /// Keep the uid/gid of the source files.
    Keep,
}

/// `prestage compose` arguments.
#[derive(Args, Debug)]
pub struct ComposeArgs {
    /// Layout: a built-in name (demo, sno-seed, sno-250g) or a layout file (layouts/*.toml).
    #[arg(long, value_name = "NAME|FILE")]
    pub layout: String,
    /// Content for a partition: LABEL=DIR or LABEL=FILE.tar (an uncompressed tar archive,
    /// read in place: owners, modes, times, attributes, devices and hard links as it records
    /// them). Repeatable.
    #[arg(long, value_name = "LABEL=DIR|FILE.tar")]
    pub content: Vec<String>,
    /// Output image; `.qcow2` selects qcow2, anything else raw.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Output format, overriding the extension.
    #[arg(long, value_enum)]
    pub format: Option<FormatArg>,
    /// Owner of a directory's files in the image (a tar archive's owners are always kept).
    #[arg(long, value_enum, default_value = "root")]
    pub owners: OwnersArg,
    /// Copy a directory's extended attributes (those this user can read; `trusted.*` need
    /// root) into the image (a tar archive's are always kept).
    #[arg(long)]
    pub xattrs: bool,
}

/// `prestage verify` arguments.
#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Raw or qcow2 image.
    pub image: PathBuf,
    /// Partition that must be present and verified.
    #[arg(long, default_value = "data")]
    pub label: String,
}

/// Runs `prestage compose`.
pub fn compose(a: ComposeArgs, mtime: i64) -> Result<()> {
    let mut contents = Vec::new();
    for c in &a.content {
        let Some((label, dir)) = c.split_once('=') else {
            bail!("--content {c}: expected LABEL=DIR or LABEL=FILE.tar");
        };
        if label.is_empty() || dir.is_empty() {
            bail!("--content {c}: expected LABEL=DIR or LABEL=FILE.tar");
        }
        contents.push((label.to_string(), PathBuf::from(dir)));
    }
    let req = super::Request {
        layout: layout::Layout::named_or_file(&a.layout)?,
        contents,
        output: a.output,
        format: a.format.map(Format::from),
        owners: match a.owners {
            OwnersArg::Root => Owners::Root,
            OwnersArg::Keep => Owners::Keep,
        },
        xattrs: a.xattrs,
        mtime,
    };
    let s = super::compose(&req)?;
    println!("{}", super::describe(&s));
    Ok(())
}

/// Runs `prestage verify`.
pub fn verify(a: VerifyArgs) -> Result<()> {
    let (format, dev) = emit::open(&a.image)?;
    let reports =
        verify::verify(&*dev, Some(&a.label)).with_context(|| format!("{}", a.image.display()))?;
    for r in &reports {
        println!(
            "{} ({}): partition `{}` OK: {} entries, {} files, {} verified",
            a.image.display(),
            format.name(),
            r.label,
            r.entries,
            r.files,
            layout::human(r.bytes)
        );
    }
    Ok(())
}
