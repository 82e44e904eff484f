//! Layouts: the disk a composition produces, read from `layouts/*.toml`.
//!
//! A layout names the disk size, sector size and GUID, and the partitions with their GPT name,
//! type and placement (a start sector, anchored to the end of the disk, or after the previous
//! partition), and the filesystem each one gets. Parsing rejects unknown keys; validation resolves
//! every partition to an exact sector range and rejects overlaps, partitions beyond the disk,
//! misaligned starts, duplicate labels, zero sizes and XFS partitions below mkfs.xfs's 300 MB
//! minimum. Every error is one line naming the file and the field.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use uuid::Uuid;

/// GPT type GUID of a Linux filesystem partition.
pub const LINUX_FS_TYPE: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";
/// GPT type GUID of an EFI system partition.
pub const EFI_SYSTEM_TYPE: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
/// mkfs.xfs refuses filesystems smaller than this.
pub const XFS_MIN_BYTES: u64 = 300_000_000;
/// The primary/backup GPT use 33 sectors each (512-byte sectors) or 5 (4096-byte sectors)
/// besides the protective MBR; the usable area is computed from the 128-entry array.
const GPT_ENTRIES_BYTES: u64 = 128 * 128;

/// A byte count written as an integer or as a string with a unit (`"120GiB"`, `"480 GB"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(i64),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) if n >= 0 => Ok(ByteSize(n as u64)),
            Raw::Int(n) => Err(serde::de::Error::custom(format!(
                "size must not be negative, got {n}"
            ))),
            Raw::Str(s) => parse_size(&s)
                .map(ByteSize)
                .map_err(serde::de::Error::custom),
        }
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&human(self.0))
    }
}

/// Parses `"512"`, `"64MiB"`, `"1.5 GiB"`, `"480GB"`, `"4k"` into bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if t.starts_with('-') {
        return Err(format!("size must not be negative, got `{s}`"));
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.trim();
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => {
            return Err(format!(
                "unknown size unit `{unit}` in `{s}` (use B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)"
            ))
        }
    };
    if num.is_empty() {
        return Err(format!("`{s}` is not a size"));
    }
    if let Some((int, frac)) = num.split_once('.') {
        let int: u64 = int.parse().map_err(|_| format!("`{s}` is not a size"))?;
        let digits = frac.len() as u32;
        let frac_v: u64 = frac.parse().map_err(|_| format!("`{s}` is not a size"))?;
        let scale = 10u64
            .checked_pow(digits)
            .ok_or(format!("`{s}`: too many digits"))?;
        let whole = int.checked_mul(mult).ok_or(format!("`{s}` is too large"))?;
        let part = (frac_v as u128 * mult as u128 / scale as u128) as u64;
        whole.checked_add(part).ok_or(format!("`{s}` is too large"))
    } else {
        let n: u64 = num.parse().map_err(|_| format!("`{s}` is not a size"))?;
        n.checked_mul(mult).ok_or(format!("`{s}` is too large"))
    }
}

/// Formats a byte count for people: `62.8 GiB`, `512 MiB`, `4096 B`.
pub fn human(n: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("TiB", 1 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ];
    for (u, m) in UNITS {
        if n >= m {
            let v = n as f64 / m as f64;
            return if n.is_multiple_of(m) {
                format!("{} {u}", n / m)
            } else {
                format!("{v:.1} {u}")
            };
        }
    }
    format!("{n} B")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLayout {
    disk: RawDisk,
    #[serde(default, rename = "partition")]
    partitions: Vec<RawPartition>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDisk {
    size: ByteSize,
    #[serde(default = "default_sector")]
    sector_size: u64,
    guid: Option<String>,
    alignment: Option<ByteSize>,
}

fn default_sector() -> u64 {
    512
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPartition {
    label: String,
    #[serde(rename = "type")]
    type_guid: Option<String>,
    start: Option<i64>,
    anchor: Option<String>,
    size: Option<ByteSize>,
    guid: Option<String>,
    filesystem: Option<String>,
    fs_label: Option<String>,
    fs_uuid: Option<String>,
    xfs: Option<RawXfs>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawXfs {
    profile: Option<String>,
    agcount: Option<u32>,
    log_size: Option<ByteSize>,
}

/// A fully resolved disk layout.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The file the layout came from (for messages).
    pub source: PathBuf,
    /// Disk size in bytes (a multiple of the sector size).
    pub disk_size: u64,
    /// Logical sector size: 512 or 4096.
    pub sector_size: u64,
    /// Disk GUID; `None` means a random one per image.
    pub disk_guid: Option<Uuid>,
    /// Partition start alignment in bytes.
    pub alignment: u64,
    /// Partitions in GPT entry order (entry 1 first).
    pub partitions: Vec<Partition>,
}

/// One partition, resolved to sectors.
#[derive(Debug, Clone)]
pub struct Partition {
    /// GPT partition name (`data` for the pre-staged images).
    pub label: String,
    /// GPT partition type GUID.
    pub type_guid: Uuid,
    /// Unique partition GUID; `None` means random per image.
    pub guid: Option<Uuid>,
    /// First sector.
    pub start_lba: u64,
    /// Last sector (inclusive).
    pub end_lba: u64,
    /// What goes into the partition.
    pub filesystem: Filesystem,
    /// Filesystem label (defaults to the partition label, cut to the filesystem's limit).
    pub fs_label: String,
    /// Filesystem UUID (XFS) or volume id (vfat, low 32 bits); `None` means random.
    pub fs_uuid: Option<Uuid>,
}

impl Partition {
    /// Byte offset of the partition in the disk.
    pub fn offset(&self, sector: u64) -> u64 {
        self.start_lba * sector
    }
    /// Size of the partition in bytes.
    pub fn size(&self, sector: u64) -> u64 {
        (self.end_lba - self.start_lba + 1) * sector
    }
}

/// The filesystem a partition receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filesystem {
    /// XFS: mkfs.xfs's empty filesystem, populated by prestage's writer.
    Xfs(XfsOptions),
    /// FAT (mkfs.fat + mcopy), for small config or EFI partitions.
    Vfat,
    /// Only reserve the space.
    None,
}

/// XFS creation options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XfsOptions {
    /// Feature set.
    pub profile: XfsProfile,
    /// Allocation group count; `None` lets mkfs.xfs choose.
    pub agcount: Option<u32>,
    /// Internal log size in bytes; `None` lets mkfs.xfs choose.
    pub log_size: Option<u64>,
}

/// Named XFS feature sets, pinned instead of taking mkfs defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XfsProfile {
    /// Mountable by the RHEL 8 kernel (4.18): the upstream 4.19 LTS feature set.
    Rhel8,
    /// Mountable by the RHEL 9 kernel (5.14): adds bigtime, inobtcount and reflink.
    Rhel9,
}

impl XfsProfile {
    /// The mkfs.xfs `-m` and `-i` option values that pin this feature set (block and inode
    /// sizes are prestage's own and added by the caller).
    pub fn mkfs_opts(self) -> (&'static str, &'static str) {
        match self {
            XfsProfile::Rhel8 => (
                "crc=1,finobt=1,bigtime=0,inobtcount=0,reflink=0,rmapbt=0",
                "sparse=1,nrext64=0",
            ),
            XfsProfile::Rhel9 => (
                "crc=1,finobt=1,bigtime=1,inobtcount=1,reflink=1,rmapbt=0",
                "sparse=1,nrext64=0",
            ),
        }
    }
    /// Superblock feature bits a filesystem of this profile may carry: (compat-ro, incompat).
    /// Anything else means mkfs.xfs enabled a feature the target kernel cannot mount.
    pub fn allowed_features(self) -> (u32, u32) {
        // ro-compat: FINOBT 0x1, REFLINK 0x4, INOBTCNT 0x8; incompat: FTYPE 0x1, SPINODES 0x2,
        // META_UUID 0x4, BIGTIME 0x8.
        match self {
            XfsProfile::Rhel8 => (0x1, 0x1 | 0x2 | 0x4),
            XfsProfile::Rhel9 => (0x1 | 0x4 | 0x8, 0x1 | 0x2 | 0x4 | 0x8),
        }
    }
    /// Name as written in layouts.
    pub fn name(self) -> &'static str {
        match self {
            XfsProfile::Rhel8 => "rhel8",
            XfsProfile::Rhel9 => "rhel9",
        }
    }
}

struct Ctx<'a> {
    file: &'a Path,
}

impl Ctx<'_> {
    fn err(&self, field: &str, msg: impl fmt::Display) -> anyhow::Error {
        anyhow::anyhow!("{}: {field}: {msg}", self.file.display())
    }
}

fn parse_guid(ctx: &Ctx, field: &str, s: &str) -> Result<Uuid> {
    Uuid::parse_str(s.trim()).map_err(|e| ctx.err(field, format!("`{s}` is not a GUID ({e})")))
}

/// One line for a TOML parse error: `file:line:col: message`.
fn toml_error(file: &Path, text: &str, e: &toml::de::Error) -> anyhow::Error {
    let msg = e.message().replace('\n', " ");
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            anyhow::anyhow!("{}:{line}:{col}: {msg}", file.display())
        }
        None => anyhow::anyhow!("{}: {msg}", file.display()),
    }
}

/// The layouts shipped in `layouts/`, built in by name so an installed binary needs no checkout.
pub const BUILTIN: &[(&str, &str)] = &[
    ("demo", include_str!("../../layouts/demo.toml")),
    ("sno-seed", include_str!("../../layouts/sno-seed.toml")),
    ("sno-250g", include_str!("../../layouts/sno-250g.toml")),
];

impl Layout {
    /// A layout by name (`sno-seed`, one of [`BUILTIN`]) or from a file: an existing path is
    /// read; a bare name that is not a file must be a built-in one.
    pub fn named_or_file(arg: &str) -> Result<Layout> {
        let path = Path::new(arg);
        if path.exists() || arg.contains('/') || arg.ends_with(".toml") {
            return Layout::load(path);
        }
        match BUILTIN.iter().find(|(n, _)| *n == arg) {
            Some((n, text)) => Layout::parse(Path::new(&format!("layouts/{n}.toml")), text),
            None => bail!(
                "--layout {arg}: no such file, and not a built-in layout ({})",
                BUILTIN
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    /// Reads and validates a layout file.
    pub fn load(path: &Path) -> Result<Layout> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read layout", path.display()))?;
        Layout::parse(path, &text)
    }

    /// Parses and validates layout text; `path` is used in messages.
    pub fn parse(path: &Path, text: &str) -> Result<Layout> {
        let raw: RawLayout = toml::from_str(text).map_err(|e| toml_error(path, text, &e))?;
        let ctx = Ctx { file: path };
        let ss = raw.disk.sector_size;
        if ss != 512 && ss != 4096 {
            return Err(ctx.err("disk.sector_size", format!("must be 512 or 4096, got {ss}")));
        }
        let disk_size = raw.disk.size.0;
        if disk_size == 0 {
            return Err(ctx.err("disk.size", "must be greater than zero"));
        }
        if !disk_size.is_multiple_of(ss) {
            return Err(ctx.err(
                "disk.size",
                format!("{disk_size} is not a multiple of the {ss}-byte sector size"),
            ));
        }
        let alignment = raw.disk.alignment.map_or(1 << 20, |a| a.0);
        if alignment == 0 || !alignment.is_multiple_of(ss) {
            return Err(ctx.err(
                "disk.alignment",
                format!("must be a positive multiple of the sector size ({ss}), got {alignment}"),
            ));
        }
        let disk_guid = raw
            .disk
            .guid
            .as_deref()
            .map(|g| parse_guid(&ctx, "disk.guid", g))
            .transpose()?;
        let sectors = disk_size / ss;
        let gpt_sectors = 1 + GPT_ENTRIES_BYTES / ss; // header + entry array
        let first_usable = 1 + gpt_sectors;
        if sectors < first_usable + gpt_sectors + 1 {
            return Err(ctx.err("disk.size", format!("{disk_size} bytes cannot hold a GPT")));
        }
        let last_usable = sectors - 1 - gpt_sectors;
        let align = alignment / ss;
        // Highest aligned boundary not beyond the usable area: to-the-end partitions end here.
        let end_boundary = (last_usable + 1) / align * align;
        if raw.partitions.is_empty() {
            return Err(ctx.err(
                "partition",
                "the layout has no partitions (add a [[partition]] table)",
            ));
        }
        let mut parts: Vec<Partition> = Vec::new();
        let mut prev_end: Option<u64> = None;
        for (i, p) in raw.partitions.iter().enumerate() {
            let f = |name: &str| format!("partition[{i}].{name}");
            if p.label.is_empty() {
                return Err(ctx.err(&f("label"), "must not be empty"));
            }
            if p.label.encode_utf16().count() > 36 {
                return Err(ctx.err(
                    &f("label"),
                    format!("`{}` is longer than GPT's 36 UTF-16 units", p.label),
                ));
            }
            if let Some(j) = parts.iter().position(|q| q.label == p.label) {
                return Err(ctx.err(
                    &f("label"),
                    format!("`{}` is already the label of partition[{j}]", p.label),
                ));
            }
            let type_guid = match p.type_guid.as_deref() {
                None | Some("linux") => parse_guid(&ctx, &f("type"), LINUX_FS_TYPE)?,
                Some("efi") => parse_guid(&ctx, &f("type"), EFI_SYSTEM_TYPE)?,
                Some(g) => parse_guid(&ctx, &f("type"), g)?,
            };
            let guid = p
                .guid
                .as_deref()
                .map(|g| parse_guid(&ctx, &f("guid"), g))
                .transpose()?;
            let size_sectors = match p.size {
                Some(ByteSize(0)) => return Err(ctx.err(&f("size"), "must be greater than zero")),
                Some(ByteSize(b)) if b % ss != 0 => {
                    return Err(ctx.err(
                        &f("size"),
                        format!("{b} is not a multiple of the {ss}-byte sector size"),
                    ))
                }
                Some(ByteSize(b)) => Some(b / ss),
                None => None,
            };
            let (start, end) = match (p.start, p.anchor.as_deref()) {
                (Some(_), Some(_)) => {
                    return Err(ctx.err(&f("anchor"), "give either `start` or `anchor`, not both"))
                }
                (Some(s), None) => {
                    if s <= 0 {
                        return Err(ctx.err(
                            &f("start"),
                            format!("must be a positive sector number, got {s}"),
                        ));
                    }
                    let s = s as u64;
                    if !s.is_multiple_of(align) {
                        let down = s / align * align;
                        return Err(ctx.err(&f("start"), format!(
                            "sector {s} is not aligned to {} sectors ({}); the nearest aligned start below it is {down}",
                            align, human(alignment))));
                    }
                    let end =
                        match size_sectors {
                            Some(n) => s + n - 1,
                            None => end_boundary.checked_sub(1).filter(|&e| e >= s).ok_or_else(
                                || {
                                    ctx.err(
                                        &f("start"),
                                        format!(
                                            "sector {s} leaves no room before the end of the disk"
                                        ),
                                    )
                                },
                            )?,
                        };
                    (s, end)
                }
                (None, Some("end")) => {
                    let n = size_sectors
                        .ok_or_else(|| ctx.err(&f("size"), "required when `anchor = \"end\"`"))?;
                    let s = end_boundary.checked_sub(n).ok_or_else(|| {
                        ctx.err(
                            &f("size"),
                            format!(
                                "{} does not fit on a {} disk",
                                human(n * ss),
                                human(disk_size)
                            ),
                        )
                    })?;
                    if s % align != 0 {
                        return Err(ctx.err(
                            &f("size"),
                            format!(
                                "must be a multiple of the alignment ({}) when anchored to the end",
                                human(alignment)
                            ),
                        ));
                    }
                    (s, end_boundary - 1)
                }
                (None, Some(other)) => {
                    return Err(ctx.err(
                        &f("anchor"),
                        format!("unknown anchor `{other}` (the only anchor is \"end\")"),
                    ))
                }
                (None, None) => {
                    let s = prev_end.map_or(first_usable, |e| e + 1);
                    let s = s.div_ceil(align) * align;
                    let end =
                        match size_sectors {
                            Some(n) => s + n - 1,
                            None => end_boundary.checked_sub(1).filter(|&e| e >= s).ok_or_else(
                                || {
                                    ctx.err(
                                        &f("size"),
                                        "no room left on the disk for this partition",
                                    )
                                },
                            )?,
                        };
                    (s, end)
                }
            };
            if start < first_usable {
                return Err(ctx.err(&f("start"), format!("sector {start} overlaps the primary GPT (first usable sector is {first_usable})")));
            }
            if end > last_usable {
                return Err(ctx.err(&f("size"), format!(
                    "partition ends at sector {end}, beyond the disk's last usable sector {last_usable} ({} disk)",
                    human(disk_size))));
            }
            for (j, q) in parts.iter().enumerate() {
                if start <= q.end_lba && q.start_lba <= end {
                    return Err(ctx.err(
                        &f("start"),
                        format!(
                            "sectors {start}..={end} overlap partition[{j}] `{}` ({}..={})",
                            q.label, q.start_lba, q.end_lba
                        ),
                    ));
                }
            }
            let bytes = (end - start + 1) * ss;
            let filesystem = match p.filesystem.as_deref().unwrap_or("none") {
                "xfs" => {
                    if bytes < XFS_MIN_BYTES {
                        return Err(ctx.err(
                            &f("size"),
                            format!(
                                "{} is below mkfs.xfs's minimum of 300 MB for an XFS filesystem",
                                human(bytes)
                            ),
                        ));
                    }
                    let x = p.xfs.as_ref();
                    let profile = match x.and_then(|x| x.profile.as_deref()).unwrap_or("rhel8") {
                        "rhel8" => XfsProfile::Rhel8,
                        "rhel9" => XfsProfile::Rhel9,
                        other => {
                            return Err(ctx.err(
                                &f("xfs.profile"),
                                format!("unknown profile `{other}` (rhel8, rhel9)"),
                            ))
                        }
                    };
                    let agcount = x.and_then(|x| x.agcount);
                    if agcount == Some(0) {
                        return Err(ctx.err(&f("xfs.agcount"), "must be greater than zero"));
                    }
                    let log_size = x.and_then(|x| x.log_size).map(|l| l.0);
                    if let Some(l) = log_size {
                        if l == 0 || l >= bytes / 2 {
                            return Err(ctx.err(
                                &f("xfs.log_size"),
                                format!(
                                    "{} is not a usable log size for a {} partition",
                                    human(l),
                                    human(bytes)
                                ),
                            ));
                        }
                    }
                    Filesystem::Xfs(XfsOptions {
                        profile,
                        agcount,
                        log_size,
                    })
                }
                "vfat" => {
                    if bytes < 1 << 20 {
                        return Err(ctx.err(&f("size"), "vfat needs at least 1 MiB"));
                    }
                    Filesystem::Vfat
                }
                "none" => Filesystem::None,
                other => {
                    return Err(ctx.err(
                        &f("filesystem"),
                        format!("unknown filesystem `{other}` (xfs, vfat, none)"),
                    ))
                }
            };
            if p.xfs.is_some() && !matches!(filesystem, Filesystem::Xfs(_)) {
                return Err(ctx.err(
                    &f("xfs"),
                    "XFS options given for a partition that is not `filesystem = \"xfs\"`",
                ));
            }
            let fs_label = p.fs_label.clone().unwrap_or_else(|| p.label.clone());
            let max_label = match filesystem {
                Filesystem::Xfs(_) => 12,
                Filesystem::Vfat => 11,
                Filesystem::None => usize::MAX,
            };
            if fs_label.len() > max_label {
                if p.fs_label.is_some() {
                    return Err(ctx.err(
                        &f("fs_label"),
                        format!("`{fs_label}` is longer than {max_label} bytes"),
                    ));
                }
                return Err(ctx.err(&f("fs_label"), format!(
                    "the partition label `{fs_label}` is too long for a filesystem label ({max_label} bytes): set fs_label")));
            }
            if fs_label
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(ctx.err(
                    &f("fs_label"),
                    format!("`{fs_label}` must not contain spaces or control characters"),
                ));
            }
            let fs_uuid = p
                .fs_uuid
                .as_deref()
                .map(|g| parse_guid(&ctx, &f("fs_uuid"), g))
                .transpose()?;
            prev_end = Some(end);
            parts.push(Partition {
                label: p.label.clone(),
                type_guid,
                guid,
                start_lba: start,
                end_lba: end,
                filesystem,
                fs_label,
                fs_uuid,
            });
        }
        Ok(Layout {
            source: path.to_path_buf(),
            disk_size,
            sector_size: ss,
            disk_guid,
            alignment,
            partitions: parts,
        })
    }

    /// The partition with this GPT label.
    pub fn partition(&self, label: &str) -> Result<&Partition> {
        match self.partitions.iter().find(|p| p.label == label) {
            Some(p) => Ok(p),
            None => bail!(
                "{}: no partition labelled `{label}` (labels: {})",
                self.source.display(),
                self.partitions
                    .iter()
                    .map(|p| p.label.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Layout> {
        Layout::parse(Path::new("t.toml"), text)
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("120GiB"), Ok(120 << 30));
        assert_eq!(parse_size("480 GB"), Ok(480_000_000_000));
        assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("GiB").is_err());
        assert!(parse_size("-5MiB").unwrap_err().contains("negative"));
    }

    #[test]
    fn seed_geometry() {
        let l = parse(
            "[disk]\nsize = \"120GiB\"\n[[partition]]\nlabel = \"data\"\nstart = 119998464\nfilesystem = \"xfs\"\n",
        )
        .unwrap();
        let p = &l.partitions[0];
        assert_eq!(p.start_lba, 119_998_464);
        assert_eq!((p.end_lba + 1) % 2048, 0);
        let gib = p.size(512) as f64 / (1u64 << 30) as f64;
        assert!((gib - 62.78).abs() < 0.01, "{gib}");
    }

    #[test]
    fn errors_name_file_and_field() {
        let cases = [
            ("[disk]\nsize = \"1GiB\"\n[[partition]]\nlabel = \"a\"\nstart = 2049\n", "partition[0].start", "not aligned"),
            ("[disk]\nsize = \"1GiB\"\n[[partition]]\nlabel = \"a\"\nsize = \"2GiB\"\n", "partition[0].size", "beyond"),
            ("[disk]\nsize = \"1GiB\"\n[[partition]]\nlabel = \"a\"\nsize = \"100MiB\"\n[[partition]]\nlabel = \"a\"\nsize = \"1MiB\"\n", "partition[1].label", "already"),
            ("[disk]\nsize = \"1GiB\"\n[[partition]]\nlabel = \"a\"\nstart = 2048\nsize = \"100MiB\"\n[[partition]]\nlabel = \"b\"\nstart = 4096\nsize=\"1MiB\"\n", "partition[1].start", "overlap"),
            ("[disk]\nsize = \"1GiB\"\n[[partition]]\nlabel = \"a\"\nsize = 0\n", "partition[0].size", "greater than zero"),
            ("[disk]\nsize = \"1GiB\"\n[[partition]]\nlabel = \"a\"\nsize = -5\n", "", "negative"),
            ("[disk]\nsize = \"1GiB\"\n[[partition]]\nlabel = \"a\"\nsize = \"200MiB\"\nfilesystem = \"xfs\"\n", "partition[0].size", "300 MB"),
            ("[disk]\nsize = \"1GiB\"\nsise = 3\n", "", "unknown field `sise`"),
        ];
        for (text, field, msg) in cases {
            let e = format!("{:#}", parse(text).unwrap_err());
            assert!(e.starts_with("t.toml"), "{e}");
            assert!(e.contains(field) && e.contains(msg), "{e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn every_shipped_layout_is_built_in() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("layouts");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter_map(|n| n.strip_suffix(".toml").map(str::to_string))
            .collect();
        files.sort();
        let mut names: Vec<String> = BUILTIN.iter().map(|(n, _)| n.to_string()).collect();
        names.sort();
        assert_eq!(files, names);
        for (n, _) in BUILTIN {
            Layout::named_or_file(n).unwrap();
        }
        let e = Layout::named_or_file("no-such").unwrap_err().to_string();
        assert!(
            e.contains("not a built-in layout (demo, sno-seed, sno-250g)"),
            "{e}"
        );
    }
}
