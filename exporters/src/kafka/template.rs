//! Topic names: a fixed name or a template over event fields such as
//! `k8s-events.{namespace}`, checked when the config is read and expanded
//! per record into a legal Kafka topic name.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Deserializer};

use crate::RecordFields;

/// Longest legal Kafka topic name.
pub const MAX_TOPIC_LEN: usize = 249;

/// The value put in for an empty field (e.g. `{namespace}` of a cluster-scoped event).
pub const EMPTY_VALUE: &str = "_";

/// An event field a topic template can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Cluster,
    Namespace,
    EventType,
    Reason,
    Kind,
    Api,
    Name,
}

/// Every placeholder name, as written between braces.
pub const PLACEHOLDERS: &[&str] = &[
    "cluster",
    "namespace",
    "type",
    "event_type",
    "reason",
    "kind",
    "api",
    "name",
];

impl Field {
    fn parse(s: &str) -> Option<Field> {
        Some(match s {
            "cluster" => Field::Cluster,
            "namespace" => Field::Namespace,
            "type" | "event_type" => Field::EventType,
            "reason" => Field::Reason,
            "kind" => Field::Kind,
            "api" => Field::Api,
            "name" => Field::Name,
            _ => return None,
        })
    }

    fn value(self, f: &RecordFields) -> &str {
        match self {
            Field::Cluster => &f.cluster,
            Field::Namespace => &f.namespace,
            Field::EventType => &f.event_type,
            Field::Reason => &f.reason,
            Field::Kind => &f.kind,
            Field::Api => &f.api,
            Field::Name => &f.name,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Lit(String),
    Field(Field),
}

/// A checked topic template. Build it with [`TopicTemplate::parse`] (or by
/// deserializing a string, which parses it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicTemplate {
    source: String,
    parts: Vec<Part>,
}

/// Whether `c` may appear in a Kafka topic name.
pub fn legal_topic_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

fn placeholder_list() -> String {
    PLACEHOLDERS
        .iter()
        .map(|p| format!("{{{p}}}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl TopicTemplate {
    /// Parses and checks a template: placeholders must be known field names in
    /// balanced braces, and the text outside them must be legal in a topic name.
    pub fn parse(source: &str) -> Result<TopicTemplate, String> {
        if source.is_empty() {
            return Err("`topic` must not be empty".into());
        }
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut rest = source;
        while let Some(c) = rest.chars().next() {
            match c {
                '{' => {
                    let Some(end) = rest.find('}') else {
                        return Err(format!(
                            "unbalanced `{{` in topic template `{source}`: every `{{` needs a closing `}}`"
                        ));
                    };
                    let name = &rest[1..end];
                    if name.contains('{') {
                        return Err(format!(
                            "unbalanced `{{` in topic template `{source}`: placeholders cannot be nested"
                        ));
                    }
                    let Some(field) = Field::parse(name.trim()) else {
                        return Err(format!(
                            "unknown placeholder `{{{name}}}` in topic template `{source}`; expected one of: {}",
                            placeholder_list()
                        ));
                    };
                    if !lit.is_empty() {
                        parts.push(Part::Lit(std::mem::take(&mut lit)));
                    }
                    parts.push(Part::Field(field));
                    rest = &rest[end + 1..];
                }
                '}' => {
                    return Err(format!(
                        "unbalanced `}}` in topic template `{source}`: it closes no `{{`"
                    ));
                }
                c => {
                    if !legal_topic_char(c) {
                        return Err(format!(
                            "topic template `{source}` has `{c}` outside placeholders; topic names may only \
                             contain ASCII letters, digits, `.`, `_` and `-`"
                        ));
                    }
                    lit.push(c);
                    rest = &rest[c.len_utf8()..];
                }
            }
        }
        if !lit.is_empty() {
            parts.push(Part::Lit(lit));
        }
        let t = TopicTemplate {
            source: source.to_string(),
            parts,
        };
        if let Some(fixed) = t.fixed() {
            if fixed == "." || fixed == ".." {
                return Err(format!("`{fixed}` is not a legal topic name"));
            }
            if fixed.len() > MAX_TOPIC_LEN {
                return Err(format!(
                    "topic `{fixed}` is {} characters long; Kafka allows at most {MAX_TOPIC_LEN}",
                    fixed.len()
                ));
            }
        }
        Ok(t)
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The topic, if the template has no placeholder.
    pub fn fixed(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [Part::Lit(s)] => Some(s),
            _ => None,
        }
    }

    /// The topic for one record: placeholders replaced by the record's fields,
    /// each made legal (characters other than ASCII letters, digits, `.`, `_`
    /// and `-` become `_`, an empty value becomes `_`), the whole cut to 249
    /// characters.
    pub fn expand<'a>(&'a self, f: &RecordFields) -> Cow<'a, str> {
        if let Some(fixed) = self.fixed() {
            return Cow::Borrowed(fixed);
        }
        let mut out = String::with_capacity(self.source.len() + 32);
        for part in &self.parts {
            match part {
                Part::Lit(s) => out.push_str(s),
                Part::Field(field) => push_sanitized(&mut out, field.value(f)),
            }
        }
        Cow::Owned(finish_topic(out))
    }
}

/// Appends `value` with every character that is illegal in a topic name replaced by `_`.
fn push_sanitized(out: &mut String, value: &str) {
    if value.is_empty() {
        out.push_str(EMPTY_VALUE);
        return;
    }
    out.extend(value.chars().map(|c| if legal_topic_char(c) { c } else { '_' }));
}

/// Cuts a sanitized (ASCII) name to the legal length and avoids `.` and `..`.
fn finish_topic(mut name: String) -> String {
    name.truncate(MAX_TOPIC_LEN);
    if name == "." || name == ".." {
        name = name.replace('.', "_");
    }
    name
}

/// Makes any string a legal topic name, the way a template expands a field.
pub fn sanitize_topic(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    push_sanitized(&mut out, value);
    finish_topic(out)
}

impl fmt::Display for TopicTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl<'de> Deserialize<'de> for TopicTemplate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        TopicTemplate::parse(&s).map_err(serde::de::Error::custom)
    }
}
