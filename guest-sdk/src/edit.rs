//! The `edit` verdict (since contract 0.2.0): say only what changes.
//!
//! An enricher that adds a label or an `extra` field does not need to parse
//! the event and send all of it back ([`Verdict::Replace`]): it answers a
//! short list of edits, which the host checks and applies in order. Nothing
//! is serialized or parsed twice, so such a call costs a fraction of a
//! replace.
//!
//! ```
//! use event_collector_guest::{Edits, Verdict};
//!
//! let v: Verdict = Edits::new()
//!     .label("team", "web-shop")
//!     .extra("severity", "high")
//!     .into();
//! assert!(matches!(v, Verdict::Edit(ref e) if e.len() == 2));
//! ```
//!
//! Edits reach labels, annotations, `extra` and the message only. Every key
//! must be non-empty; one invalid edit fails the call and none is applied.
//!
//! [`Verdict::Replace`]: crate::Verdict::Replace

use serde::Serialize;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;

use crate::Verdict;

/// One change to the event.
#[derive(Debug, Clone, PartialEq)]
pub enum Edit {
    /// `labels[key] = value`.
    SetLabel(String, String),
    /// `labels[key] = value` unless the event already has `labels[key]`
    /// (after the edits before this one). Contract 0.3.0.
    SetLabelIfAbsent(String, String),
    /// Removes `labels[key]` (nothing happens when it is absent).
    RemoveLabel(String),
    /// `annotations[key] = value`.
    SetAnnotation(String, String),
    /// Removes `annotations[key]` (nothing happens when it is absent).
    RemoveAnnotation(String),
    /// `extra[key] = value`.
    SetExtra(String, Value),
    /// Removes `extra[key]` (nothing happens when it is absent).
    RemoveExtra(String),
    /// Sets `message` and `note` together.
    SetMessage(String),
}

impl Edit {
    pub(crate) fn into_wit(self) -> crate::bindings::event_collector::filter::types::Edit {
        use crate::bindings::event_collector::filter::types::Edit as W;
        match self {
            Edit::SetLabel(k, v) => W::SetLabel((k, v)),
            Edit::SetLabelIfAbsent(k, v) => W::SetLabelIfAbsent((k, v)),
            Edit::RemoveLabel(k) => W::RemoveLabel(k),
            Edit::SetAnnotation(k, v) => W::SetAnnotation((k, v)),
            Edit::RemoveAnnotation(k) => W::RemoveAnnotation(k),
            Edit::SetExtra(k, v) => W::SetExtra((k, json_text(v))),
            Edit::RemoveExtra(k) => W::RemoveExtra(k),
            Edit::SetMessage(m) => W::SetMessage(m),
        }
    }
}

/// The JSON text of `v`, byte for byte what `serde_json` writes. A string
/// with nothing to escape (the usual `extra` value: `"high"`, a team name) is
/// quoted in its own buffer: no formatter and no second allocation, which
/// was a measurable part of an enricher's call.
fn json_text(v: Value) -> String {
    match v {
        Value::String(mut s) if !s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) => {
            s.reserve_exact(2);
            s.insert(0, '"');
            s.push('"');
            s
        }
        // Serializing a `Value` cannot fail (its map keys are strings).
        v => serde_json::to_string(&v).unwrap_or_default(),
    }
}

/// A builder for an edit list: each method adds one [`Edit`]; turn it into a
/// [`Verdict`] with `.into()` or [`Edits::verdict`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Edits(Vec<Edit>);

impl Edits {
    pub fn new() -> Edits {
        Edits(Vec::new())
    }

    /// Sets `labels[key]`.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Edits {
        self.0.push(Edit::SetLabel(key.into(), value.into()));
        self
    }

    /// Sets `labels[key]` unless the event already has that label: a default
    /// that respects a label the event carries, without asking for the
    /// event's JSON. Applied in order, so it sees the edits before it:
    /// after `.label("team", "a")` it changes nothing; after
    /// `.remove_label("team")` it sets the label.
    pub fn label_if_absent(mut self, key: impl Into<String>, value: impl Into<String>) -> Edits {
        self.0.push(Edit::SetLabelIfAbsent(key.into(), value.into()));
        self
    }

    /// Removes `labels[key]`.
    pub fn remove_label(mut self, key: impl Into<String>) -> Edits {
        self.0.push(Edit::RemoveLabel(key.into()));
        self
    }

    /// Sets `annotations[key]`.
    pub fn annotation(mut self, key: impl Into<String>, value: impl Into<String>) -> Edits {
        self.0.push(Edit::SetAnnotation(key.into(), value.into()));
        self
    }

    /// Removes `annotations[key]`.
    pub fn remove_annotation(mut self, key: impl Into<String>) -> Edits {
        self.0.push(Edit::RemoveAnnotation(key.into()));
        self
    }

    /// Sets `extra[key]` to a JSON value (`"high"`, `3`, `true`, `json!({...})`).
    pub fn extra(mut self, key: impl Into<String>, value: impl Into<Value>) -> Edits {
        self.0.push(Edit::SetExtra(key.into(), value.into()));
        self
    }

    /// Sets `extra[key]` to any serializable value (a struct, a map, ...).
    pub fn extra_serialized(self, key: impl Into<String>, value: &impl Serialize) -> Result<Edits, String> {
        let key = key.into();
        let v = serde_json::to_value(value).map_err(|e| format!("extra {key:?}: cannot serialize the value: {e}"))?;
        Ok(self.extra(key, v))
    }

    /// Removes `extra[key]`.
    pub fn remove_extra(mut self, key: impl Into<String>) -> Edits {
        self.0.push(Edit::RemoveExtra(key.into()));
        self
    }

    /// Sets the message (`message` and `note`).
    pub fn message(mut self, text: impl Into<String>) -> Edits {
        self.0.push(Edit::SetMessage(text.into()));
        self
    }

    /// Adds one edit.
    pub fn push(&mut self, edit: Edit) {
        self.0.push(edit);
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The verdict: [`Verdict::Edit`], or [`Verdict::Keep`] when there is no edit.
    pub fn verdict(self) -> Verdict {
        if self.0.is_empty() {
            Verdict::Keep
        } else {
            Verdict::Edit(self.0)
        }
    }
}

impl From<Edits> for Verdict {
    fn from(e: Edits) -> Verdict {
        e.verdict()
    }
}

impl From<Edits> for Vec<Edit> {
    fn from(e: Edits) -> Vec<Edit> {
        e.0
    }
}

/// `labels[key]` of the event JSON, without parsing the event: when the key's
/// text does not occur in the JSON the answer is `None` at once; otherwise
/// only `labels` is read (every other field is skipped, nothing is
/// allocated for it). To merely avoid overwriting a label the event already
/// carries, [`Edits::label_if_absent`] is cheaper: it needs no JSON. In `process`, call it as
/// [`EventJson::label`](crate::EventJson::label), which fetches the JSON
/// from the host first.
pub fn label(event: &str, key: &str) -> Result<Option<String>, String> {
    // A key with characters JSON escapes may be written differently; so may
    // any key when the JSON uses \u escapes. Only then is the scan unsafe.
    let plain = !key.chars().any(|c| c == '"' || c == '\\' || c.is_control());
    if plain && !event.contains(key) && !event.contains("\\u") {
        return Ok(None);
    }
    let mut de = serde_json::Deserializer::from_str(event);
    de.deserialize_map(LabelVisitor { key })
        .map_err(|e| format!("the event is not a JSON object with string labels: {e}"))
}

struct LabelVisitor<'k> {
    key: &'k str,
}

impl<'de> Visitor<'de> for LabelVisitor<'_> {
    type Value = Option<String>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a normalized event")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<String>, A::Error> {
        let mut found = None;
        while let Some(k) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if k == "labels" {
                let labels: Option<std::collections::BTreeMap<String, String>> = map.next_value()?;
                found = labels.and_then(|mut l| l.remove(self.key));
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::event_collector::filter::types::Edit as W;

    #[test]
    fn the_builder_keeps_order() {
        let e = Edits::new()
            .label("team", "web")
            .label_if_absent("tier", "backend")
            .remove_label("old")
            .annotation("a", "1")
            .remove_annotation("b")
            .extra("severity", "high")
            .extra("n", 3)
            .remove_extra("x")
            .message("text");
        assert_eq!(e.len(), 9);
        let Verdict::Edit(list) = e.verdict() else {
            panic!("not an edit verdict")
        };
        assert_eq!(
            list,
            vec![
                Edit::SetLabel("team".into(), "web".into()),
                Edit::SetLabelIfAbsent("tier".into(), "backend".into()),
                Edit::RemoveLabel("old".into()),
                Edit::SetAnnotation("a".into(), "1".into()),
                Edit::RemoveAnnotation("b".into()),
                Edit::SetExtra("severity".into(), Value::from("high")),
                Edit::SetExtra("n".into(), Value::from(3)),
                Edit::RemoveExtra("x".into()),
                Edit::SetMessage("text".into()),
            ]
        );
    }

    #[test]
    fn extra_values_go_to_the_host_as_json_text() {
        #[derive(Serialize)]
        struct Owner {
            team: &'static str,
            oncall: bool,
        }
        let e = Edits::new()
            .extra("severity", "high")
            .extra_serialized(
                "owner",
                &Owner {
                    team: "web",
                    oncall: true,
                },
            )
            .unwrap();
        let Verdict::Edit(list) = e.verdict() else {
            panic!("not an edit verdict")
        };
        let wit: Vec<(String, String)> = list
            .into_iter()
            .map(|e| match e.into_wit() {
                W::SetExtra(kv) => kv,
                other => panic!("not a set-extra: {other:?}"),
            })
            .collect();
        assert_eq!(
            wit,
            vec![
                ("severity".to_string(), "\"high\"".to_string()),
                ("owner".to_string(), r#"{"oncall":true,"team":"web"}"#.to_string()),
            ]
        );
    }

    #[test]
    fn json_text_is_what_serde_json_writes() {
        let values = [
            Value::from("high"),
            Value::from(""),
            Value::from("sch\u{f6}n \u{1f600}"),
            Value::from("quote \" in"),
            Value::from("back\\slash"),
            Value::from("tab\tnewline\n\u{1}\u{1f}"),
            Value::from("\u{7f} is not escaped"),
            Value::from(3),
            Value::from(-2.5),
            Value::from(true),
            Value::Null,
            serde_json::json!({"a": [1, "x\"y"], "b": {"c": null}}),
        ];
        for v in values {
            assert_eq!(json_text(v.clone()), serde_json::to_string(&v).unwrap(), "{v:?}");
        }
    }

    #[test]
    fn label_if_absent_goes_to_the_host_as_its_own_edit() {
        let Verdict::Edit(list) = Edits::new().label_if_absent("team", "web").verdict() else {
            panic!("not an edit verdict")
        };
        let wit: Vec<W> = list.into_iter().map(Edit::into_wit).collect();
        assert!(
            matches!(wit.as_slice(), [W::SetLabelIfAbsent((k, v))] if k == "team" && v == "web"),
            "{wit:?}"
        );
    }

    #[test]
    fn no_edit_is_keep() {
        assert_eq!(Verdict::from(Edits::new()), Verdict::Keep);
    }

    #[test]
    fn label_reads_only_labels() {
        let ev = r#"{"uid":"u","labels":{"app":"web","team":"sre"},"extra":{"team":"x"}}"#;
        assert_eq!(label(ev, "team").unwrap().as_deref(), Some("sre"));
        assert_eq!(label(ev, "app").unwrap().as_deref(), Some("web"));
        assert_eq!(label(ev, "owner").unwrap(), None);
        // The key occurs elsewhere, not in labels.
        let ev = r#"{"uid":"u","labels":{},"extra":{"team":"x"}}"#;
        assert_eq!(label(ev, "team").unwrap(), None);
        // Escaped keys are found.
        let ev = r#"{"labels":{"t\u0065am":"sre"}}"#;
        assert_eq!(label(ev, "team").unwrap().as_deref(), Some("sre"));
        let ev = r#"{"labels":{"a\"b":"q"}}"#;
        assert_eq!(label(ev, "a\"b").unwrap().as_deref(), Some("q"));
        // null or absent labels.
        assert_eq!(label(r#"{"labels":null,"team":1}"#, "team").unwrap(), None);
        assert!(label("not json team", "team").is_err());
    }
}
