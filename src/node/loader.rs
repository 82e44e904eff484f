//! The loader scripts that run on the node: `extract-ai.sh` (discovery stage, `ai-images.txt`)
//! and `extract-ocp.sh` (install stage, `ocp-images.txt`), one pair per payload format, made
//! from one template (`extract.sh`) with the stage, format and partition label filled in.
//!
//! What they do and refuse is documented at the top of the template. They need only RHCOS's own
//! tools: bash, skopeo, util-linux (`findmnt`, `mount`), coreutils, and for `ztp` tar and gzip.

use anyhow::{bail, Context, Result};

use crate::payload::{Format, Stage};

const TEMPLATE: &str = include_str!("extract.sh");

/// Checks a partition label for the loaders: what a GPT name can hold and a shell never
/// interprets.
pub fn check_label(label: &str) -> Result<()> {
    if label.is_empty()
        || label.len() > 36
        || !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        bail!(
            "--label {label:?}: a partition label for the node loaders is 1 to 36 characters of \
             A-Z, a-z, 0-9, `.`, `_` and `-`"
        );
    }
    Ok(())
}

/// Whether `bytes` are a loader prestage wrote (any version, format, stage or label): what an
/// Ignition merge may replace instead of refusing as the user's own file.
pub fn is_prestage_loader(bytes: &[u8]) -> bool {
    let head = &bytes[..bytes.len().min(512)];
    head.starts_with(b"#!/bin/bash\n# extract-")
        && head.windows(MARK.len()).any(|w| w == MARK.as_bytes())
}

/// Words of the template's header that only prestage's loaders carry.
const MARK: &str = "Written by prestage for\n# the `";

/// The loader's file name (`extract-ai.sh`, `extract-ocp.sh`).
pub fn file_name(stage: Stage) -> String {
    format!("extract-{}.sh", stage.short())
}

/// Where the loader sits on the partition: in its stage tree for `shared`, at the root for `ztp`
/// (where the upstream loader's users expect it).
pub fn partition_path(format: Format, stage: Stage) -> String {
    match format {
        Format::Shared => format!("{}/{}", stage.dir(), file_name(stage)),
        Format::Ztp | Format::Store => file_name(stage),
    }
}

const ZTP_SCRATCH: &str = r#"# Room to extract images: on the partition when it is mounted writable and has room, else in
# /var/tmp, for --jobs of the largest images at once; only this scratch directory is removed.
largest=0
tgz=(*.tgz)
if [ "${#tgz[@]}" -gt 0 ]; then
    largest=$(stat -L -c %s -- "${tgz[@]}" | sort -n | tail -n 1)
fi
need=$((largest * JOBS + 64 * 1024 * 1024))
for base in "${MNT}" /var/tmp; do
    avail=$(df -B1 --output=avail -- "${base}" 2>/dev/null | tail -n 1)
    if [[ ${avail} =~ ^[0-9]+$ ]] && [ "${avail}" -ge "${need}" ] &&
        SCRATCH=$(mktemp -d "${base}/.prestage-scratch.XXXXXX" 2>/dev/null); then
        break
    fi
    SCRATCH=
done
[ -n "${SCRATCH}" ] || die "no room to extract: ${need} bytes are needed on the partition or in /var/tmp"
log "extracting into ${SCRATCH}"
"#;

/// The loader script for one format and stage; `label` must pass [`check_label`].
pub fn script(format: Format, stage: Stage, label: &str) -> Result<String> {
    check_label(label)?;
    let (options, doc, tools, scratch) = match format {
        Format::Shared => ("\"ro,nouuid\"", "read-only", String::new(), ""),
        Format::Ztp => (
            "\"rw,nouuid\" \"ro,nouuid\"",
            "read-write, to extract images beside the payload when it has room; read-only when it \
             cannot be written",
            " tar gzip df stat sort".to_string(),
            ZTP_SCRATCH,
        ),
        Format::Store => bail!("the store payload has no loader script in this version"),
    };
    let out = TEMPLATE
        .replace("@PROG@", &file_name(stage))
        .replace(
            "@STAGE_NAME@",
            match stage {
                Stage::Discovery => "discovery",
                Stage::Install => "install",
            },
        )
        .replace("@STAGE@", stage.short())
        .replace("@FORMAT@", format.name())
        .replace("@LABEL@", label)
        .replace("@LIST@", stage.list())
        .replace("@TREE@", stage.dir())
        .replace("@MOUNT_OPTIONS@", options)
        .replace("@MOUNT_DOC@", doc)
        .replace(" @TOOLS@", &tools)
        .replace("@ZTP_SCRATCH@\n", scratch);
    let left = regex::Regex::new("@[A-Z_]+@").context("internal error: placeholder pattern")?;
    if let Some(m) = left.find(&out) {
        bail!("internal error: loader placeholder {} is left", m.as_str());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_checked() {
        check_label("data").unwrap();
        check_label("var-lib_containers.1").unwrap();
        for bad in ["", "a b", "$(id)", "x'y", &"a".repeat(37)] {
            assert!(check_label(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn loaders_are_recognised() {
        for f in Format::ALL {
            for s in Stage::ALL {
                assert!(is_prestage_loader(script(f, s, "data").unwrap().as_bytes()));
            }
        }
        assert!(!is_prestage_loader(b"#!/bin/bash\n# extract-ai.sh: mine\n"));
    }

    #[test]
    fn scripts_are_filled_in() {
        for f in Format::ALL {
            for s in Stage::ALL {
                let t = script(f, s, "data").unwrap();
                assert!(!t.contains("@P") && !t.contains("@S") && !t.contains("@M"));
                assert!(t.starts_with("#!/bin/bash\n"));
                assert!(t.contains(&format!("LIST={}", s.list())));
                assert_eq!(t.contains("SCRATCH=$(mktemp"), f == Format::Ztp);
            }
        }
    }
}
