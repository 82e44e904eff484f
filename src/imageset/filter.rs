//! Filter files: a YAML document with a `patterns:` list of regular expressions. An image is
//! filtered out when a pattern matches (anywhere, unless anchored) its source reference or its
//! destination tag — the tag carries the release component name (`4.14.3-x86_64-aws-ebs-csi-driver`),
//! which is how users drop cloud-provider components. Filtered images are recorded with the
//! pattern that matched.

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use regex::Regex;
use serde::{Deserialize, Serialize};

use super::config::from_yaml;

/// A compiled filter.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    patterns: Vec<(String, Regex)>,
}

/// An image a filter removed.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Filtered {
    /// Source reference.
    pub reference: String,
    /// The pattern that matched.
    pub pattern: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Doc {
    patterns: Vec<String>,
}

impl Filter {
    /// Parses a filter file's text; `file` names it in messages.
    pub fn parse(file: &str, text: &str) -> Result<Filter> {
        let doc: Doc = from_yaml(file, text)?;
        let mut patterns = Vec::new();
        for (i, p) in doc.patterns.into_iter().enumerate() {
            if p.is_empty() {
                return Err(anyhow!(
                    "{file}: patterns[{i}]: empty pattern (it would match everything)"
                ));
            }
            let re = regex::RegexBuilder::new(&p)
                .size_limit(1 << 20)
                .build()
                .map_err(|e| {
                    let e = e.to_string().replace('\n', " ");
                    anyhow!("{file}: patterns[{i}]: `{p}` is not a regular expression: {e}")
                })?;
            patterns.push((p, re));
        }
        Ok(Filter { patterns })
    }

    /// Reads a filter file.
    pub fn load(path: &Path) -> Result<Filter> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Filter::parse(&path.display().to_string(), &text)
    }

    /// Whether the filter has no patterns.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The first pattern matching the source reference or the destination tag.
    pub fn matching(&self, source: &str, tag: Option<&str>) -> Option<&str> {
        self.patterns
            .iter()
            .find(|(_, re)| re.is_match(source) || tag.is_some_and(|t| re.is_match(t)))
            .map(|(p, _)| p.as_str())
    }

    /// Splits `(source, tag)` pairs into kept and filtered, keeping their order.
    pub fn apply<'a>(
        &self,
        images: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
    ) -> (Vec<&'a str>, Vec<Filtered>) {
        let mut kept = Vec::new();
        let mut filtered = Vec::new();
        for (src, tag) in images {
            match self.matching(src, tag) {
                Some(p) => filtered.push(Filtered {
                    reference: src.to_string(),
                    pattern: p.to_string(),
                }),
                None => kept.push(src),
            }
        }
        (kept, filtered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_sources_and_tags() {
        let f = Filter::parse(
            "filter.yaml",
            "patterns:\n  - '-(aws|azure|gcp)-'\n  - '^registry\\.example/unwanted/'\n",
        )
        .unwrap();
        let (kept, filtered) = f.apply([
            (
                "quay.io/o/art@sha256:1",
                Some("4.14.3-x86_64-aws-ebs-csi-driver"),
            ),
            ("quay.io/o/art@sha256:2", Some("4.14.3-x86_64-etcd")),
            ("registry.example/unwanted/x:1", Some("1")),
            ("registry.example/wanted/x:1", None),
        ]);
        assert_eq!(
            kept,
            vec!["quay.io/o/art@sha256:2", "registry.example/wanted/x:1"]
        );
        assert_eq!(
            filtered,
            vec![
                Filtered {
                    reference: "quay.io/o/art@sha256:1".into(),
                    pattern: "-(aws|azure|gcp)-".into()
                },
                Filtered {
                    reference: "registry.example/unwanted/x:1".into(),
                    pattern: "^registry\\.example/unwanted/".into()
                }
            ]
        );
    }

    #[test]
    fn bad_filters() {
        let e = Filter::parse("f.yaml", "patterns: ['ok', '(unclosed']")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("f.yaml: patterns[1]: `(unclosed` is not a regular expression"),
            "{e}"
        );
        assert!(!e.contains('\n'));
        let e = Filter::parse("f.yaml", "pattern: ['x']")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("f.yaml: pattern: unknown field"), "{e}");
        let e = Filter::parse("f.yaml", "patterns: ['']")
            .unwrap_err()
            .to_string();
        assert!(e.contains("empty pattern"), "{e}");
    }
}
