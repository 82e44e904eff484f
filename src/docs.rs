//! Documentation generated from the command line's own definition: shell completions
//! (`prestage completions SHELL`, clap_complete) and one man page per command and subcommand
//! (`prestage man DIR`, clap_mangen), so they never disagree with `--help`.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Command;
use clap_complete::Shell;

/// Writes the completion script for `shell` to `out`.
pub fn completions(mut cmd: Command, shell: Shell, out: &mut dyn Write) {
    let name = cmd.get_name().to_string();
    clap_complete::generate(shell, &mut cmd, name, out);
}

/// Writes `NAME.1` for the command and `NAME-SUB[-SUB…].1` for each subcommand into `dir`
/// (created), each through a temporary name; returns the pages written.
pub fn man_pages(cmd: Command, dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut cmd = cmd;
    cmd.build();
    let mut pages = Vec::new();
    write_pages(&cmd, cmd.get_name(), dir, &mut pages)?;
    Ok(pages)
}

fn write_pages(cmd: &Command, name: &str, dir: &Path, pages: &mut Vec<PathBuf>) -> Result<()> {
    let page = cmd.clone().name(name.to_string());
    let mut bytes = Vec::new();
    clap_mangen::Man::new(page)
        .render(&mut bytes)
        .with_context(|| format!("rendering the man page of {name}"))?;
    let path = dir.join(format!("{name}.1"));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a file in {}", dir.display()))?;
    tmp.write_all(&bytes)
        .with_context(|| format!("writing {}", path.display()))?;
    tmp.persist(&path)
        .map_err(|e| e.error)
        .with_context(|| format!("writing {}", path.display()))?;
    pages.push(path);
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        write_pages(sub, &format!("{name}-{}", sub.get_name()), dir, pages)?;
    }
    Ok(())
}
