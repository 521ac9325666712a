//! One list page read as it streams in.
//!
//! The API server answers a list with one JSON object,
//! `{"kind":…,"metadata":{…},"items":[…]}`: about 0.8 MB for 500 Events.
//! [`PageReader`] finds the elements of the top-level `items` array as the
//! bytes arrive and hands each one over as soon as it is complete, so a page
//! is never held whole, neither as text nor as decoded objects beside their
//! text. Everything else (the envelope, with `items` left empty) is kept and
//! decoded at the end for the list's resourceVersion and continue token.
//!
//! The reader only finds boundaries (strings, escapes, nesting); serde_json
//! still decodes and validates every byte, the items one by one and the
//! envelope at the end.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ListMeta;
use serde::Deserialize;

/// A page that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error("the list page ended inside its items ({0} bytes of the last one read)")]
    Truncated(usize),
    #[error("the list page is not a Kubernetes list: {0}")]
    Envelope(#[source] serde_json::Error),
}

/// What a page says besides its items.
#[derive(Debug, Default, Deserialize)]
pub struct Envelope {
    #[serde(default)]
    pub metadata: ListMeta,
}

/// The longest key compared, in bytes: `items` and its closing quote.
const KEY_CAP: usize = 8;

/// Splits a list page's `items` into elements as its bytes arrive.
#[derive(Debug, Default)]
pub struct PageReader {
    /// Nesting: 1 inside the page object, 2 inside `items`, 3 inside an item.
    depth: u32,
    string: bool,
    escaped: bool,
    /// At depth 1: the next string is a key.
    expect_key: bool,
    /// The key being read (its first bytes), at depth 1.
    key: Option<Vec<u8>>,
    /// The last key read at depth 1 was `items`.
    at_items: bool,
    /// Inside the top-level `items` array.
    items: bool,
    /// Inside one element of `items`.
    in_item: bool,
    /// The current element's bytes from earlier chunks.
    item: Vec<u8>,
    /// Everything outside `items`' elements.
    envelope: Vec<u8>,
}

impl PageReader {
    /// Reads the next bytes of the page; `on_item` gets each complete element
    /// of `items`, in order.
    pub fn feed(&mut self, chunk: &[u8], mut on_item: impl FnMut(&[u8])) {
        let mut item_from = self.in_item.then_some(0);
        let mut i = 0;
        while i < chunk.len() {
            if self.string {
                i = self.string_bytes(chunk, i);
                continue;
            }
            let b = chunk[i];
            if self.items && self.depth == 2 {
                if self.in_item {
                    if b == b',' || b == b']' {
                        // The element is complete; `b` is read again between elements.
                        let from = item_from.take().unwrap_or(0);
                        if self.item.is_empty() {
                            on_item(&chunk[from..i]);
                        } else {
                            self.item.extend_from_slice(&chunk[from..i]);
                            on_item(&self.item);
                            self.item.clear();
                        }
                        self.in_item = false;
                        continue;
                    }
                } else {
                    match b {
                        b' ' | b'\t' | b'\n' | b'\r' | b',' => {
                            i += 1;
                            continue;
                        }
                        b']' => {
                            self.items = false;
                            self.depth = 1;
                            self.envelope.push(b);
                            i += 1;
                            continue;
                        }
                        _ => {
                            self.in_item = true;
                            item_from = Some(i);
                        }
                    }
                }
            }
            self.structural(b);
            if !self.in_item {
                self.envelope.push(b);
            }
            i += 1;
        }
        if let Some(from) = item_from
            && self.in_item
        {
            self.item.extend_from_slice(&chunk[from..]);
        }
    }

    /// A byte outside strings.
    fn structural(&mut self, b: u8) {
        match b {
            b'"' => {
                self.string = true;
                if self.depth == 1 && self.expect_key {
                    self.expect_key = false;
                    self.key = Some(Vec::with_capacity(KEY_CAP));
                }
            }
            b'{' | b'[' => {
                if self.depth == 1 && b == b'[' && self.at_items {
                    self.items = true;
                }
                self.depth += 1;
                if self.depth == 1 {
                    self.expect_key = b == b'{';
                }
            }
            b'}' | b']' => self.depth = self.depth.saturating_sub(1),
            b',' if self.depth == 1 => self.expect_key = true,
            _ => {}
        }
    }

    /// Bytes inside a string, from `i`: up to and including its closing
    /// quote, or to the chunk's end. Returns where reading goes on.
    fn string_bytes(&mut self, chunk: &[u8], i: usize) -> usize {
        let end = if self.escaped {
            self.escaped = false;
            i + 1
        } else {
            match memchr::memchr2(b'"', b'\\', &chunk[i..]) {
                None => chunk.len(),
                Some(k) => {
                    let j = i + k;
                    if chunk[j] == b'\\' {
                        self.escaped = true;
                    } else {
                        self.string = false;
                    }
                    j + 1
                }
            }
        };
        if !self.in_item {
            let bytes = &chunk[i..end];
            self.envelope.extend_from_slice(bytes);
            if let Some(key) = &mut self.key {
                let room = KEY_CAP.saturating_sub(key.len()).min(bytes.len());
                key.extend_from_slice(&bytes[..room]);
                if !self.string {
                    self.at_items = key.as_slice() == b"items\"";
                    self.key = None;
                }
            }
        }
        end
    }

    /// The page's envelope, once every byte has been read.
    pub fn finish(self) -> Result<Envelope, PageError> {
        if self.items || self.in_item {
            return Err(PageError::Truncated(self.item.len()));
        }
        serde_json::from_slice(&self.envelope).map_err(PageError::Envelope)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// Reads `page` in chunks of `size` bytes: the items' texts and the envelope.
    fn read(page: &[u8], size: usize) -> (Vec<String>, Result<Envelope, PageError>) {
        let mut r = PageReader::default();
        let mut items = Vec::new();
        for chunk in page.chunks(size) {
            r.feed(chunk, |t| items.push(String::from_utf8(t.to_vec()).unwrap()));
        }
        (items, r.finish())
    }

    #[test]
    fn items_split_at_every_chunk_size() {
        let objects = vec![
            json!({"kind":"Event","metadata":{"uid":"a","labels":{"k":"[{\"x\"}]"}},"note":"quote \" backslash \\ brace }"}),
            json!({"kind":"Event","metadata":{"uid":"b"},"series":{"count":2},"list":[[1,2],[{}]]}),
            json!("a \"string\" item, with ] and ,"),
            json!(null),
            json!({"kind":"Event","message":"caf\u{e9} \u{1F600} \\\\\"","metadata":{"uid":"c"}}),
        ];
        let page = json!({
            "kind": "EventList",
            "apiVersion": "v1",
            "metadata": {"resourceVersion": "42", "continue": "tok\"en"},
            "items": objects,
        });
        // Pretty-printed too: whitespace between and around the elements.
        for text in [page.to_string(), serde_json::to_string_pretty(&page).unwrap()] {
            for size in [1, 2, 3, 7, 64, 1 << 20] {
                let (items, env) = read(text.as_bytes(), size);
                let decoded: Vec<Value> = items.iter().map(|t| serde_json::from_str(t).unwrap()).collect();
                assert_eq!(decoded, objects, "chunks of {size}");
                let meta = env.unwrap().metadata;
                assert_eq!(meta.resource_version.as_deref(), Some("42"));
                assert_eq!(meta.continue_.as_deref(), Some("tok\"en"));
            }
        }
    }

    #[test]
    fn only_the_top_level_items_key_is_split() {
        // `items` inside metadata, and a key that starts like it, are envelope.
        let text = r#"{"metadata":{"items":[1,2],"resourceVersion":"7"},"itemsx":[3],"items":[{"a":{"items":[4]}}],"z":{"items":[5]}}"#;
        let (items, env) = read(text.as_bytes(), 5);
        assert_eq!(items, [r#"{"a":{"items":[4]}}"#]);
        assert_eq!(env.unwrap().metadata.resource_version.as_deref(), Some("7"));
    }

    #[test]
    fn an_empty_page_and_a_page_without_items() {
        let (items, env) = read(
            br#"{"kind":"EventList","metadata":{"resourceVersion":"9"},"items":[]}"#,
            4,
        );
        assert!(items.is_empty());
        assert_eq!(env.unwrap().metadata.resource_version.as_deref(), Some("9"));
        let (items, env) = read(br#"{"metadata":{"resourceVersion":"9"},"items":null}"#, 4);
        assert!(items.is_empty());
        assert!(env.is_ok());
    }

    #[test]
    fn a_cut_or_foreign_body_is_an_error() {
        let full = r#"{"metadata":{"resourceVersion":"1"},"items":[{"a":1},{"b":2}]}"#;
        for cut in [full.len() - 1, full.len() - 3, full.len() / 2, 10] {
            let (_, env) = read(&full.as_bytes()[..cut], 3);
            assert!(env.is_err(), "cut at {cut}");
        }
        let (_, env) = read(&full.as_bytes()[..full.len() - 3], 3);
        assert!(matches!(env, Err(PageError::Truncated(_))));
        for body in ["<html>bad gateway</html>", "", "[1,2]", "{\"metadata\":"] {
            let (_, env) = read(body.as_bytes(), 3);
            let e = env.expect_err(body).to_string();
            assert!(e.starts_with("the list page "), "{body}: {e}");
        }
    }
}
