//! The pure parts of a bulk write: index names, document ids, the ndjson body,
//! how a batch is split into requests, and how a bulk response is read item
//! by item. Nothing here does I/O, so all of it is unit-tested.

use std::borrow::Cow;
use std::io::Write;
use std::ops::Range;

use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, TimeZone, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::Record;

/// Characters Elasticsearch and OpenSearch refuse in an index name.
const FORBIDDEN: &[char] = &['\\', '/', '*', '?', '"', '<', '>', '|', ',', '#', ':', ' ', '%'];

/// Checks a concrete index, alias or data stream name against the server's rules.
pub fn check_index_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the name is empty".into());
    }
    if name.len() > 255 {
        return Err(format!("`{name}` is longer than 255 bytes"));
    }
    if name == "." || name == ".." {
        return Err(format!("`{name}` is not a valid name"));
    }
    if name.starts_with(['-', '_', '+']) {
        return Err(format!("`{name}` must not start with `-`, `_` or `+`"));
    }
    if name.chars().any(|c| c.is_uppercase()) {
        return Err(format!("`{name}` must be lowercase"));
    }
    if let Some(c) = name.chars().find(|c| FORBIDDEN.contains(c)) {
        return Err(format!(
            "`{name}` contains `{c}`; names must not contain \\ / * ? \" < > | , # : or spaces"
        ));
    }
    Ok(())
}

/// Where documents go: one fixed name (an index, a write alias or a data
/// stream), or a date-templated index name rendered from each event's time.
#[derive(Debug, Clone)]
pub enum IndexName {
    Fixed(String),
    Dated { pattern: String, items: Vec<Item<'static>> },
}

impl IndexName {
    /// Parses `index`. `allow_dates` is false for aliases and data streams,
    /// whose name is fixed.
    pub fn parse(index: &str, allow_dates: bool) -> Result<IndexName, String> {
        if !index.contains('%') {
            check_index_name(index)?;
            return Ok(IndexName::Fixed(index.to_string()));
        }
        if !allow_dates {
            return Err(format!(
                "`{index}` has date fields (%...), which only mode = \"index\" supports; aliases and data streams have one fixed name"
            ));
        }
        let items = StrftimeItems::new(index)
            .parse_to_owned()
            .map_err(|_| format!("`{index}` is not a valid strftime pattern (e.g. \"k8s-events-%Y.%m.%d\")"))?;
        let prefix = &index[..index.find('%').unwrap_or(0)];
        if prefix.is_empty() {
            return Err(format!(
                "`{index}` must start with a fixed prefix (e.g. \"k8s-events-%Y.%m.%d\"), so that the index template matches only these indices"
            ));
        }
        let name = IndexName::Dated {
            pattern: index.to_string(),
            items,
        };
        // Render two far-apart dates: every rendering must be a valid name, and
        // the date must actually be part of the name.
        let a = name.render(Utc.with_ymd_and_hms(2024, 12, 31, 23, 59, 59).unwrap());
        let b = name.render(Utc.with_ymd_and_hms(2031, 1, 2, 3, 4, 5).unwrap());
        check_index_name(&a).map_err(|e| format!("`{index}` renders as an invalid index name: {e}"))?;
        check_index_name(&b).map_err(|e| format!("`{index}` renders as an invalid index name: {e}"))?;
        if a == b {
            return Err(format!("`{index}` renders the same name for every date"));
        }
        Ok(name)
    }

    fn render(&self, t: DateTime<Utc>) -> String {
        match self {
            IndexName::Fixed(n) => n.clone(),
            IndexName::Dated { items, .. } => t.format_with_items(items.iter()).to_string(),
        }
    }

    /// The index for an event whose time is `timestamp` (RFC 3339). A time
    /// that does not parse (never the case for normalized events) counts as now.
    pub fn for_timestamp(&self, timestamp: &str) -> Cow<'_, str> {
        match self {
            IndexName::Fixed(n) => Cow::Borrowed(n),
            IndexName::Dated { .. } => {
                let t = DateTime::parse_from_rfc3339(timestamp)
                    .map(|t| t.with_timezone(&Utc))
                    .unwrap_or_else(|_| Utc::now());
                Cow::Owned(self.render(t))
            }
        }
    }

    /// The fixed part before the first date field (the whole name if fixed).
    pub fn prefix(&self) -> &str {
        match self {
            IndexName::Fixed(n) => n,
            IndexName::Dated { pattern, .. } => &pattern[..pattern.find('%').unwrap_or(pattern.len())],
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            IndexName::Fixed(n) => n,
            IndexName::Dated { pattern, .. } => pattern,
        }
    }
}

/// The document `_id`: the first 128 bits of SHA-256 over (cluster, uid,
/// resource_version), as 32 hex digits. The same event occurrence always gets
/// the same id, whichever API it was read through and however often it is
/// sent; a new occurrence (a repeat) has a new resourceVersion and so a new id.
/// A record without a uid (never the case for a real Event) is keyed on its
/// whole JSON instead.
pub fn document_id(rec: &Record) -> String {
    let f = &rec.fields;
    let mut h = Sha256::new();
    h.update(f.cluster.as_bytes());
    h.update([0]);
    if f.uid.is_empty() && f.resource_version.is_empty() {
        h.update(b"json\0");
        h.update(&rec.json);
    } else {
        h.update(f.uid.as_bytes());
        h.update([0]);
        h.update(f.resource_version.as_bytes());
    }
    let digest = h.finalize();
    let mut out = String::with_capacity(32);
    for b in &digest[..16] {
        out.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    out
}

/// Appends one `create` action and its document to a bulk body. The document
/// is the record's JSON with `"@timestamp"` spliced in as its first key (no
/// re-serialization); a raw newline inside the JSON (only ever whitespace)
/// becomes a space, so the body stays one line per action and per document.
pub fn append_create(buf: &mut Vec<u8>, index: &str, id: &str, timestamp: &str, json: &[u8]) {
    buf.extend_from_slice(b"{\"create\":{\"_index\":");
    // Index names and ids never need escaping, but a string is written as JSON anyway.
    serde_json::to_writer(&mut *buf, index).expect("writing to a Vec cannot fail");
    buf.extend_from_slice(b",\"_id\":");
    serde_json::to_writer(&mut *buf, id).expect("writing to a Vec cannot fail");
    buf.extend_from_slice(b"}}\n");
    let start = buf.len();
    let trimmed = json.trim_ascii_start();
    match trimmed.strip_prefix(b"{") {
        Some(rest) if !timestamp.is_empty() => {
            buf.extend_from_slice(b"{\"@timestamp\":");
            serde_json::to_writer(&mut *buf, timestamp).expect("writing to a Vec cannot fail");
            if !rest.trim_ascii_start().starts_with(b"}") {
                buf.push(b',');
            }
            buf.extend_from_slice(rest);
        }
        // Not an object (the server refuses it and it is dead-lettered), or no time.
        _ => buf.extend_from_slice(json),
    }
    if buf[start..].contains(&b'\n') {
        for b in &mut buf[start..] {
            if *b == b'\n' {
                *b = b' ';
            }
        }
    }
    buf.push(b'\n');
}

/// Groups consecutive items (by size in bytes) into requests of at most
/// `max_bytes` each; an item larger than that gets a request of its own.
pub fn plan_chunks(sizes: &[usize], max_bytes: u64) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes: u64 = 0;
    for (i, &s) in sizes.iter().enumerate() {
        let s = s as u64;
        if i > start && bytes + s > max_bytes {
            out.push(start..i);
            start = i;
            bytes = 0;
        }
        bytes += s;
    }
    if start < sizes.len() {
        out.push(start..sizes.len());
    }
    out
}

/// gzip for request bodies (`compression = true`): fast level, the network
/// is what it saves.
pub fn gzip(body: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::with_capacity(body.len() / 4 + 64), flate2::Compression::fast());
    enc.write_all(body).expect("writing to a Vec cannot fail");
    enc.finish().expect("writing to a Vec cannot fail")
}

/// What became of one document of a bulk request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx: written.
    Created,
    /// 409: a document with this `_id` is already there: this occurrence was
    /// written before (a resend), so it counts as delivered.
    Duplicate,
    /// 429, 5xx and other refusals that may pass later (401, 403 such as a
    /// read-only index block, 404): send it again.
    Retry { status: u16, error: String },
    /// 400 (a mapping or parsing error, a closed index, …) or a document too
    /// large: sending it again cannot help, so it goes to the dead-letter exporter.
    Reject { status: u16, error: String },
}

/// Classifies one bulk item by its status and error object.
pub fn classify(status: u16, error: Option<&Value>) -> Outcome {
    let describe = || error.map(describe_error).unwrap_or_else(|| format!("status {status}"));
    match status {
        200..=299 => Outcome::Created,
        409 => Outcome::Duplicate,
        400 | 413 => Outcome::Reject {
            status,
            error: describe(),
        },
        _ => Outcome::Retry {
            status,
            error: describe(),
        },
    }
}

/// `type: reason` of an error object, with its first cause if there is one
/// (e.g. `document_parsing_exception: failed to parse field [reason] of type
/// [long] … (caused by illegal_argument_exception: For input string: "BackOff")`).
pub fn describe_error(e: &Value) -> String {
    match e {
        Value::String(s) => s.clone(),
        Value::Object(o) => {
            let ty = o.get("type").and_then(Value::as_str).unwrap_or("error");
            let mut s = match o.get("reason").and_then(Value::as_str) {
                Some(r) => format!("{ty}: {r}"),
                None => ty.to_string(),
            };
            if let Some(c) = o.get("caused_by").filter(|c| c.is_object()) {
                s.push_str(" (caused by ");
                s.push_str(&describe_error(c));
                s.push(')');
            }
            s
        }
        other => other.to_string(),
    }
}

/// Reads a bulk response body: one [`Outcome`] per document, in request
/// order. Fails if the body is not a bulk response for `expected` documents.
pub fn parse_bulk_response(body: &[u8], expected: usize) -> Result<Vec<Outcome>, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("bulk response is not JSON: {e}"))?;
    let items = v
        .get("items")
        .and_then(Value::as_array)
        .ok_or_else(|| "bulk response has no `items`".to_string())?;
    if items.len() != expected {
        return Err(format!(
            "bulk response has {} items for {expected} documents",
            items.len()
        ));
    }
    items
        .iter()
        .map(|item| {
            // Each item is {"<action>": {"status": …, "error": …}}.
            let inner = item
                .as_object()
                .and_then(|o| o.values().next())
                .ok_or_else(|| format!("bulk response item is not an object: {item}"))?;
            let status = inner
                .get("status")
                .and_then(Value::as_u64)
                .and_then(|s| u16::try_from(s).ok())
                .ok_or_else(|| format!("bulk response item has no status: {item}"))?;
            Ok(classify(status, inner.get("error")))
        })
        .collect()
}

/// An error body of a whole request, as `type: reason`, or its first bytes.
pub fn describe_body(body: &[u8]) -> String {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => match v.get("error") {
            Some(e) => describe_error(e),
            None => truncate(&String::from_utf8_lossy(body), 300),
        },
        Err(_) => truncate(&String::from_utf8_lossy(body), 300),
    }
}

pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.trim().to_string();
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", s[..cut].trim())
}
