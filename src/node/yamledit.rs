//! Targeted edits of a user's YAML file: every byte outside the values prestage sets stays as it
//! was (comments, key order, quoting, blank lines, document separators, line endings).
//!
//! A YAML serializer round-trip would reorder or requote keys and drop comments, so the file is
//! never re-serialized. It is parsed by `saphyr-parser`, whose events carry the source position
//! of every node ([`parse`] builds a tree of [`Node`]s with byte ranges); an edit replaces the
//! bytes of one scalar value, inserts one `key: value` line after a mapping's last entry, appends
//! one item to a block sequence, or appends a document ([`Edits`]). Values prestage writes are a
//! literal block scalar (`|`, for multi-line text such as pretty-printed JSON) or a single-quoted
//! scalar (one line); a comment on the replaced value's line is kept after it.
//!
//! Only block-style collections are edited (a flow mapping `{…}` around a value is refused with a
//! message), and never a value with an anchor, alias or tag. Callers verify the result with a
//! second, independent parser (see `super::gitops`).

use anyhow::{bail, Result};
use saphyr_parser::{Event, Parser, ScalarStyle, Span};

/// A node of the document tree, with its bytes in the source.
#[derive(Debug, Clone)]
pub struct Node {
    /// What it is.
    pub kind: Kind,
    /// Byte offset of its first character (for block scalars: of its content).
    pub start: usize,
    /// Byte offset the parser ends it at (exclusive; for block collections and block scalars
    /// this can lie after trailing blank lines and comments, see [`Src::content_end`]).
    pub end: usize,
    /// Line of `start`, from 1.
    pub line: usize,
    /// Column of `start`, in characters from 0.
    pub col: usize,
    /// It carries an anchor (`&a`), an alias (`*a`) or a tag (`!t`).
    pub special: bool,
}

/// Node kinds.
#[derive(Debug, Clone)]
pub enum Kind {
    /// A scalar: its value and style.
    Scalar(String, ScalarStyle),
    /// A mapping: (key, value) pairs; `true` when in flow style.
    Map(Vec<(Node, Node)>, bool),
    /// A sequence: items; `true` when in flow style.
    Seq(Vec<Node>, bool),
    /// An alias.
    Alias,
}

impl Node {
    /// The value of `key` in this mapping, with its key node.
    pub fn entry(&self, key: &str) -> Option<(&Node, &Node)> {
        match &self.kind {
            Kind::Map(entries, _) => entries
                .iter()
                .find(|(k, _)| matches!(&k.kind, Kind::Scalar(s, _) if s == key))
                .map(|(k, v)| (k, v)),
            _ => None,
        }
    }

    /// The value of `key` in this mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|(_, v)| v)
    }

    /// The string of a scalar.
    pub fn str(&self) -> Option<&str> {
        match &self.kind {
            Kind::Scalar(s, _) => Some(s),
            _ => None,
        }
    }

    /// A plain `null`, `~` or empty scalar: a key written without a value.
    pub fn is_null(&self) -> bool {
        matches!(&self.kind, Kind::Scalar(s, ScalarStyle::Plain)
            if s.is_empty() || s == "~" || s == "null" || s == "Null" || s == "NULL")
    }

    /// What kind of YAML this is, for messages.
    pub fn what(&self) -> &'static str {
        match &self.kind {
            Kind::Scalar(..) => "a scalar",
            Kind::Map(..) => "a mapping",
            Kind::Seq(..) => "a list",
            Kind::Alias => "an alias",
        }
    }
}

/// One document of a stream.
#[derive(Debug, Clone)]
pub struct Doc {
    /// Its root node.
    pub root: Node,
}

/// The source text, with what positions need.
pub struct Src<'a> {
    /// The text.
    pub text: &'a str,
    /// The line break of the file (`\r\n` when it uses those, else `\n`).
    pub nl: &'static str,
    byte_of: Vec<usize>,
}

impl<'a> Src<'a> {
    /// Wraps `text`.
    pub fn new(text: &'a str) -> Src<'a> {
        let mut byte_of: Vec<usize> = text.char_indices().map(|(b, _)| b).collect();
        byte_of.push(text.len());
        Src {
            text,
            nl: if text.contains("\r\n") { "\r\n" } else { "\n" },
            byte_of,
        }
    }

    fn byte(&self, char_index: usize) -> usize {
        self.byte_of
            .get(char_index)
            .copied()
            .unwrap_or(self.text.len())
    }

    /// The end of the line holding `pos` (the offset of its line break, or the end of text).
    pub fn line_end(&self, pos: usize) -> usize {
        let b = self.text.as_bytes();
        let mut i = pos.min(b.len());
        while i < b.len() && b[i] != b'\n' && b[i] != b'\r' {
            i += 1;
        }
        i
    }

    /// Where a node's own text ends: after its last non-blank character (block scalars and
    /// block collections end, for the parser, at the next token).
    pub fn content_end(&self, n: &Node) -> usize {
        match &n.kind {
            Kind::Scalar(_, ScalarStyle::Literal | ScalarStyle::Folded) => {
                let b = self.text.as_bytes();
                let mut i = n.end.min(b.len());
                while i > n.start && matches!(b[i - 1], b' ' | b'\t' | b'\n' | b'\r') {
                    i -= 1;
                }
                i
            }
            Kind::Map(entries, false) => entries.last().map_or(n.end, |(_, v)| self.content_end(v)),
            Kind::Seq(items, false) => items.last().map_or(n.end, |v| self.content_end(v)),
            _ => n.end,
        }
    }
}

/// Parses every document of `text`; errors give the line and column.
pub fn parse(src: &Src) -> Result<Vec<Doc>> {
    let mut p = Parser::new_from_str(src.text);
    let mut next = move || -> Result<(Event<'_>, Span)> {
        match p.next_event() {
            Some(Ok(e)) => Ok(e),
            Some(Err(e)) => bail!(
                "not YAML: {} at line {} column {}",
                e.info(),
                e.marker().line(),
                e.marker().col() + 1
            ),
            None => bail!("not YAML: the text ends early"),
        }
    };
    let mut docs = Vec::new();
    loop {
        match next()?.0 {
            Event::StreamStart | Event::DocumentEnd => {}
            Event::StreamEnd => break,
            Event::DocumentStart(_) => {
                let ev = next()?;
                let root = node(src, ev, &mut next)?;
                docs.push(Doc { root });
            }
            e => bail!("not YAML: unexpected {e:?}"),
        }
    }
    Ok(docs)
}

fn node<'i>(
    src: &Src,
    (ev, span): (Event<'i>, Span),
    next: &mut dyn FnMut() -> Result<(Event<'i>, Span)>,
) -> Result<Node> {
    let start = src.byte(span.start.index());
    let mut n = Node {
        kind: Kind::Alias,
        start,
        end: src.byte(span.end.index()),
        line: span.start.line(),
        col: span.start.col(),
        special: false,
    };
    match ev {
        Event::Scalar(v, style, anchor, tag) => {
            if matches!(style, ScalarStyle::SingleQuoted | ScalarStyle::DoubleQuoted) {
                // The parser's span runs on over blanks and a comment after the closing quote.
                n.end = quoted_end(src.text, start, n.end);
            }
            n.kind = Kind::Scalar(v.into_owned(), style);
            n.special = anchor != 0 || tag.is_some();
        }
        Event::Alias(_) => n.special = true,
        Event::MappingStart(anchor, tag) => {
            n.special = anchor != 0 || tag.is_some();
            let flow = src.text[start..].starts_with('{');
            let mut entries = Vec::new();
            loop {
                let ev = next()?;
                if matches!(ev.0, Event::MappingEnd) {
                    n.end = src.byte(ev.1.end.index());
                    break;
                }
                let k = node(src, ev, next)?;
                let ev = next()?;
                let v = node(src, ev, next)?;
                entries.push((k, v));
            }
            n.kind = Kind::Map(entries, flow);
        }
        Event::SequenceStart(anchor, tag) => {
            n.special = anchor != 0 || tag.is_some();
            let flow = src.text[start..].starts_with('[');
            let mut items = Vec::new();
            loop {
                let ev = next()?;
                if matches!(ev.0, Event::SequenceEnd) {
                    n.end = src.byte(ev.1.end.index());
                    break;
                }
                items.push(node(src, ev, next)?);
            }
            n.kind = Kind::Seq(items, flow);
        }
        e => bail!("not YAML: unexpected {e:?}"),
    }
    Ok(n)
}

/// The offset after the closing quote of the quoted scalar starting at `start` (`''` and `\"`
/// escapes skipped); `fallback` when there is none.
fn quoted_end(text: &str, start: usize, fallback: usize) -> usize {
    let b = text.as_bytes();
    let Some(&q) = b.get(start) else {
        return fallback;
    };
    if q != b'\'' && q != b'"' {
        return fallback;
    }
    let mut i = start + 1;
    while i < b.len() {
        if q == b'"' && b[i] == b'\\' {
            i += 2;
            continue;
        }
        if b[i] == q {
            if q == b'\'' && b.get(i + 1) == Some(&b'\'') {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    fallback
}

/// A value prestage writes.
pub enum Value<'a> {
    /// Multi-line text as a literal block scalar (`|`): the lines, without a final line break.
    Block(&'a str),
    /// One line as a single-quoted scalar.
    Quoted(&'a str),
}

/// `s` as a YAML single-quoted scalar (`'` doubled); `s` must be one line of printable ASCII.
pub fn single_quoted(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Pending edits of one text: (start, end, column, replacement), applied all at once.
#[derive(Default, Debug)]
pub struct Edits {
    list: Vec<(usize, usize, usize, String)>,
}

impl Edits {
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Records an edit; `col` is the column of what an insertion adds (0 for others).
    fn push(&mut self, start: usize, end: usize, col: usize, text: String) {
        self.list.push((start, end, col, text));
    }

    /// The text with every edit made. Insertions at one position go deepest first (a node's new
    /// key before its parent's, which would otherwise swallow it as more-indented text), then in
    /// the order they were made.
    pub fn apply(&self, text: &str) -> Result<String> {
        let mut list: Vec<(usize, usize, std::cmp::Reverse<usize>, usize, &str)> = self
            .list
            .iter()
            .enumerate()
            .map(|(i, (s, e, c, t))| (*s, *e, std::cmp::Reverse(*c), i, t.as_str()))
            .collect();
        list.sort_by_key(|&(s, e, c, i, _)| (s, e, c, i));
        for w in list.windows(2) {
            if w[0].1 > w[1].0 {
                bail!("internal error: overlapping YAML edits");
            }
        }
        let mut out = String::with_capacity(text.len() + 4096);
        let mut at = 0;
        for (s, e, _, _, t) in list {
            out.push_str(&text[at..s]);
            out.push_str(t);
            at = e;
        }
        out.push_str(&text[at..]);
        Ok(out)
    }

    /// Sets `key` of the block mapping `map` to `value`: the old value's bytes are replaced, or a
    /// `key: value` line is added after the mapping's last entry.
    pub fn set(&mut self, src: &Src, map: &Node, key: &str, value: &Value) -> Result<()> {
        let Kind::Map(entries, flow) = &map.kind else {
            bail!("not a mapping ({})", map.what());
        };
        if *flow {
            bail!("written in flow style ({{…}}); prestage edits block-style mappings only");
        }
        let key_col = entries.first().map_or(map.col, |(k, _)| k.col);
        let indent = " ".repeat(key_col + 2);
        let emit = |header_comment: &str| match value {
            Value::Block(lines) => {
                let mut s = format!("|{header_comment}");
                for l in lines.split('\n') {
                    s.push_str(src.nl);
                    if !l.is_empty() {
                        s.push_str(&indent);
                        s.push_str(l);
                    }
                }
                s
            }
            Value::Quoted(one) => format!("{}{header_comment}", single_quoted(one)),
        };
        let Some((k, v)) = map.entry(key) else {
            let at = src.line_end(src.content_end(map));
            let text = format!("{}{}{key}: {}", src.nl, " ".repeat(key_col), emit(""));
            self.push(at, at, key_col, text);
            return Ok(());
        };
        if v.special || k.special {
            bail!("{key}: has an anchor, alias or tag; prestage does not edit those");
        }
        let Kind::Scalar(_, style) = &v.kind else {
            bail!("{key}: not a string ({})", v.what());
        };
        // Where the old value starts: its first character, or for block scalars the indicator
        // after the key's colon; an empty value starts right after the colon.
        let b = src.text.as_bytes();
        let after_colon = {
            let mut i = k.end;
            while i < b.len() && b[i] != b':' {
                i += 1;
            }
            (i + 1).min(b.len())
        };
        let block = matches!(style, ScalarStyle::Literal | ScalarStyle::Folded);
        let (start, end, comment, lead) = if block {
            let mut i = after_colon;
            while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
                i += 1;
            }
            if i >= b.len() || !(b[i] == b'|' || b[i] == b'>') {
                bail!("{key}: cannot find its block scalar indicator");
            }
            let mut ind_end = i + 1;
            while ind_end < b.len()
                && (b[ind_end] == b'-' || b[ind_end] == b'+' || b[ind_end].is_ascii_digit())
            {
                ind_end += 1;
            }
            let header_end = src.line_end(ind_end);
            let comment = &src.text[ind_end..header_end];
            let end = src.content_end(v).max(header_end);
            (i, end, comment, "")
        } else {
            let (start, end, lead) = if v.start == v.end {
                (after_colon, after_colon, " ")
            } else {
                (v.start, v.end, "")
            };
            let line_end = src.line_end(end);
            let rest = &src.text[end..line_end];
            if !rest.trim().is_empty() && !rest.trim_start().starts_with('#') {
                bail!("{key}: more follows its value on its line; prestage edits block-style YAML only");
            }
            (start, line_end, rest, lead)
        };
        let comment = if comment.trim().is_empty() {
            ""
        } else {
            comment
        };
        let mut text = format!("{lead}{}", emit(comment));
        if end == src.text.len() {
            text.push_str(src.nl);
        }
        self.push(start, end, 0, text);
        Ok(())
    }

    /// Appends `item` (one line, e.g. `name: x`) to the block sequence at `key` of the block
    /// mapping `map`, creating the key when missing.
    pub fn append_item(&mut self, src: &Src, map: &Node, key: &str, item: &str) -> Result<()> {
        let Kind::Map(entries, flow) = &map.kind else {
            bail!("not a mapping ({})", map.what());
        };
        if *flow {
            bail!("written in flow style ({{…}}); prestage edits block-style mappings only");
        }
        let key_col = entries.first().map_or(map.col, |(k, _)| k.col);
        match map.entry(key) {
            None => {
                let at = src.line_end(src.content_end(map));
                let text = format!(
                    "{nl}{}{key}:{nl}{}- {item}",
                    " ".repeat(key_col),
                    " ".repeat(key_col + 2),
                    nl = src.nl
                );
                self.push(at, at, key_col, text);
            }
            Some((k, v)) if v.is_null() && !v.special => {
                // `key:` or `key: null`: the null goes, the list follows the key's line.
                let b = src.text.as_bytes();
                let mut colon = k.end;
                while colon < b.len() && b[colon] != b':' {
                    colon += 1;
                }
                let after = (colon + 1).min(b.len());
                if v.end > after {
                    self.push(after, v.end, 0, String::new());
                }
                let at = src.line_end(v.end.max(after));
                let text = format!("{}{}- {item}", src.nl, " ".repeat(key_col + 2));
                self.push(at, at, key_col + 2, text);
            }
            Some((_, v)) => match &v.kind {
                Kind::Seq(_, false) if !v.special => {
                    let at = src.line_end(src.content_end(v));
                    let text = format!("{}{}- {item}", src.nl, " ".repeat(v.col));
                    self.push(at, at, v.col, text);
                }
                Kind::Seq(items, true) if !v.special => {
                    let close = v.end.saturating_sub(1);
                    if src.text.as_bytes().get(close) != Some(&b']') {
                        bail!("{key}: cannot find the end of its list");
                    }
                    let sep = if items.is_empty() { "" } else { ", " };
                    self.push(close, close, 0, format!("{sep}{{{item}}}"));
                }
                _ => bail!("{key}: not a list ({})", v.what()),
            },
        }
        Ok(())
    }

    /// Replaces the document whose root is `root` with `text` (lines joined by `\n`).
    pub fn replace_doc(&mut self, src: &Src, root: &Node, text: &str) {
        let text = text.strip_suffix('\n').unwrap_or(text);
        self.push(
            root.start,
            src.content_end(root),
            0,
            text.replace('\n', src.nl),
        );
    }

    /// Appends a document `text` (lines joined by `\n`) at the end.
    pub fn append_doc(&mut self, src: &Src, text: &str) {
        let mut s = String::new();
        if !src.text.is_empty() && !src.text.ends_with('\n') {
            s.push_str(src.nl);
        }
        s.push_str("---");
        s.push_str(src.nl);
        let text = text.strip_suffix('\n').unwrap_or(text);
        s.push_str(&text.replace('\n', src.nl));
        s.push_str(src.nl);
        self.push(src.text.len(), src.text.len(), 0, s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edit(text: &str, f: impl Fn(&Src, &[Doc], &mut Edits)) -> String {
        let src = Src::new(text);
        let docs = parse(&src).unwrap();
        let mut e = Edits::default();
        f(&src, &docs, &mut e);
        e.apply(text).unwrap()
    }

    const TEXT: &str = "# head\n---\nkind: X # k\nspec:\n  a: '1' # keep me\n  nodes:\n    - hostName: n1\n      args: |  # hdr\n        old\n\n      # about n2\n    - hostName: n2\n      m:\n        k: v\n# tail\n";

    #[test]
    fn values_are_replaced_and_keys_added_leaving_every_other_byte() {
        let out = edit(TEXT, |src, docs, e| {
            let spec = docs[0].root.get("spec").unwrap();
            e.set(src, spec, "a", &Value::Quoted("it's")).unwrap();
            let Kind::Seq(nodes, _) = &spec.get("nodes").unwrap().kind else {
                panic!()
            };
            e.set(src, &nodes[0], "args", &Value::Block("{\n  \"x\": 1\n}"))
                .unwrap();
            e.set(src, &nodes[1], "args", &Value::Quoted("[]")).unwrap();
            e.set(src, &nodes[1], "more", &Value::Block("a\n\nb"))
                .unwrap();
        });
        assert_eq!(
            out,
            "# head\n---\nkind: X # k\nspec:\n  a: 'it''s' # keep me\n  nodes:\n    - hostName: n1\n      args: |  # hdr\n        {\n          \"x\": 1\n        }\n\n      # about n2\n    - hostName: n2\n      m:\n        k: v\n      args: '[]'\n      more: |\n        a\n\n        b\n# tail\n"
        );
        let y: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(out.split_once("---\n").unwrap().1).unwrap();
        assert_eq!(
            y["spec"]["nodes"][0]["args"].as_str(),
            Some("{\n  \"x\": 1\n}\n")
        );
        assert_eq!(y["spec"]["nodes"][1]["more"].as_str(), Some("a\n\nb\n"));
        assert_eq!(y["spec"]["a"].as_str(), Some("it's"));
    }

    #[test]
    fn empty_values_lists_documents_and_crlf() {
        let text = "spec:\n  a:\n  refs:\n    - name: x\n  b: 1\r\n";
        let text = text.replace('\n', "\r\n").replace("\r\r\n", "\r\n");
        let out = edit(&text, |src, docs, e| {
            let spec = docs[0].root.get("spec").unwrap();
            e.set(src, spec, "a", &Value::Block("l1\nl2")).unwrap();
            e.append_item(src, spec, "refs", "name: y").unwrap();
            e.append_item(src, spec, "new", "name: z").unwrap();
            e.append_doc(src, "kind: ConfigMap\nmetadata:\n  name: z");
        });
        assert_eq!(
            out,
            "spec:\r\n  a: |\r\n    l1\r\n    l2\r\n  refs:\r\n    - name: x\r\n    - name: y\r\n  b: 1\r\n  new:\r\n    - name: z\r\n---\r\nkind: ConfigMap\r\nmetadata:\r\n  name: z\r\n"
        );
        let flow = edit("spec:\n  refs: []\n  o: {a: 1}\n", |src, docs, e| {
            let spec = docs[0].root.get("spec").unwrap();
            e.append_item(src, spec, "refs", "name: y").unwrap();
            let err = e
                .set(src, spec.get("o").unwrap(), "a", &Value::Quoted("x"))
                .unwrap_err();
            assert!(err.to_string().contains("flow style"), "{err}");
        });
        assert_eq!(flow, "spec:\n  refs: [{name: y}]\n  o: {a: 1}\n");
    }

    #[test]
    fn a_value_at_the_end_of_the_text_keeps_a_line_break() {
        let out = edit("a: |\n  x", |src, docs, e| {
            e.set(src, &docs[0].root, "a", &Value::Block("y")).unwrap();
        });
        assert_eq!(out, "a: |\n  y\n");
    }

    #[test]
    fn anchors_and_non_strings_are_refused() {
        edit("a: &x 'v'\nb: [1]\n", |src, docs, e| {
            assert!(e.set(src, &docs[0].root, "a", &Value::Quoted("1")).is_err());
            let err = e
                .set(src, &docs[0].root, "b", &Value::Quoted("1"))
                .unwrap_err();
            assert!(err.to_string().contains("not a string (a list)"), "{err}");
        });
    }
}
