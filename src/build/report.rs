//! `OUT.report.json`: what a build put on the partition, image by image (source, digest, stages,
//! bytes, paths), with the plan it was built from. A CI job publishes it beside the image.

use anyhow::{Context, Result};
use serde::Serialize;

use super::FormatPlan;
use crate::payload::{Format, ImageReport};

/// The report's format identifier.
pub const FORMAT: &str = "prestage-report/1";

/// The report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Always [`FORMAT`].
    pub format: &'static str,
    /// The image path as given.
    pub image: String,
    /// `raw` or `qcow2`.
    pub image_format: String,
    /// The payload format.
    pub payload: Format,
    /// The partition holding it.
    pub label: String,
    /// Sizes: payload, filesystem, partition.
    pub plan: FormatPlan,
    /// The same sizes for the other payload formats of the same images, to choose by: `shared`
    /// and `ztp` always, `store` when it is the one built (its size is that of the unpacked
    /// layers, known by reading every layer; `prestage plan` compares all three).
    pub compared: Vec<FormatPlan>,
    /// Every image.
    pub images: Vec<ImageReport>,
}

impl Report {
    /// Pretty JSON with a trailing newline.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut v = serde_json::to_vec_pretty(self).context("serializing the report")?;
        v.push(b'\n');
        Ok(v)
    }
}
