//! The `edit` verdict (contract 0.2.0; `set-label-if-absent` since 0.3.0): a guest's list of changes to the
//! event, checked as a whole ([`Edits::check`]) and then applied in order to
//! the event the chain owns ([`Edits::apply`]), so an enricher sends back a
//! few fields instead of the whole event.
//!
//! Edits reach labels, annotations, `extra` and the message only: the uid,
//! the resource version and everything else stay as the collector made them.

use serde_json::Value;

use super::{CallError, FailureKind};
use crate::event::Event;

/// A value for `extra`, as the guest gave it.
#[derive(Debug, Clone, PartialEq)]
pub enum ExtraValue {
    /// JSON text (a component's `set-extra`), parsed by [`Edits::check`].
    Text(String),
    /// Already JSON (a core module's verdict is parsed as a whole).
    Json(Value),
}

/// One change, as the guest asked for it (not yet checked).
#[derive(Debug, Clone, PartialEq)]
pub enum Edit {
    SetLabel(String, String),
    /// A default: set only when the event has no such label.
    SetLabelIfAbsent(String, String),
    RemoveLabel(String),
    SetAnnotation(String, String),
    RemoveAnnotation(String),
    SetExtra(String, ExtraValue),
    RemoveExtra(String),
    /// `message` and `note` together.
    SetMessage(String),
}

impl Edit {
    /// The contract's name of the edit (`set-label`, ...), for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Edit::SetLabel(..) => "set-label",
            Edit::SetLabelIfAbsent(..) => "set-label-if-absent",
            Edit::RemoveLabel(_) => "remove-label",
            Edit::SetAnnotation(..) => "set-annotation",
            Edit::RemoveAnnotation(_) => "remove-annotation",
            Edit::SetExtra(..) => "set-extra",
            Edit::RemoveExtra(_) => "remove-extra",
            Edit::SetMessage(_) => "set-message",
        }
    }

    fn key(&self) -> Option<&str> {
        match self {
            Edit::SetLabel(k, _)
            | Edit::SetLabelIfAbsent(k, _)
            | Edit::RemoveLabel(k)
            | Edit::SetAnnotation(k, _)
            | Edit::RemoveAnnotation(k)
            | Edit::SetExtra(k, _)
            | Edit::RemoveExtra(k) => Some(k),
            Edit::SetMessage(_) => None,
        }
    }
}

/// A checked edit list: applying it cannot fail.
#[derive(Debug, Clone, PartialEq)]
pub struct Edits(Vec<Edit>);

impl Edits {
    /// Checks every edit (keys non-empty, `set-extra` values valid JSON) and
    /// parses the JSON texts. One bad edit rejects the whole list, so a
    /// failed call changes nothing.
    pub fn check(mut edits: Vec<Edit>) -> Result<Edits, CallError> {
        let bad = |i: usize, e: &Edit, why: String| {
            CallError::new(
                FailureKind::InvalidOutput,
                format!("edit #{} ({}) is invalid: {why}; no edit was applied", i + 1, e.name()),
            )
        };
        for (i, e) in edits.iter_mut().enumerate() {
            if e.key().is_some_and(str::is_empty) {
                return Err(bad(i, e, "the key is empty".into()));
            }
            if let Edit::SetExtra(key, ExtraValue::Text(text)) = e {
                // The common value, a plain JSON string ("\"high\""): its text
                // becomes the value without a parse or a new allocation.
                if let Some(plain) = plain_json_string(text) {
                    let (key, value) = (std::mem::take(key), plain);
                    *e = Edit::SetExtra(key, ExtraValue::Json(Value::String(value)));
                    continue;
                }
                match serde_json::from_str::<Value>(text) {
                    Ok(v) => {
                        let key = std::mem::take(key);
                        *e = Edit::SetExtra(key, ExtraValue::Json(v));
                    }
                    Err(err) => {
                        let why = format!("the value for extra key {key:?} is not JSON ({err})");
                        return Err(bad(i, e, why));
                    }
                }
            }
        }
        Ok(Edits(edits))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The edits, in order.
    pub fn as_slice(&self) -> &[Edit] {
        &self.0
    }

    /// Applies the edits to `ev` in order (moving their strings in).
    pub fn apply(self, ev: &mut Event) {
        for e in self.0 {
            match e {
                Edit::SetLabel(k, v) => {
                    ev.labels.insert(k, v);
                }
                Edit::SetLabelIfAbsent(k, v) => {
                    ev.labels.entry(k).or_insert(v);
                }
                Edit::RemoveLabel(k) => {
                    ev.labels.remove(&k);
                }
                Edit::SetAnnotation(k, v) => {
                    ev.annotations.insert(k, v);
                }
                Edit::RemoveAnnotation(k) => {
                    ev.annotations.remove(&k);
                }
                Edit::SetExtra(k, ExtraValue::Json(v)) => {
                    ev.extra.insert(k, v);
                }
                // `check` parsed every text; an unchecked one cannot get here.
                Edit::SetExtra(k, ExtraValue::Text(t)) => {
                    if let Ok(v) = serde_json::from_str(&t) {
                        ev.extra.insert(k, v);
                    }
                }
                Edit::RemoveExtra(k) => {
                    ev.extra.remove(&k);
                }
                Edit::SetMessage(m) => {
                    ev.note = Some(m.clone());
                    ev.message = Some(m);
                }
            }
        }
    }

    /// `input` with the edits applied (a copy; for tools and test vectors).
    pub fn applied_to(&self, input: &Event) -> Event {
        let mut ev = input.clone();
        self.clone().apply(&mut ev);
        ev
    }
}

/// The contents of `text` if it is a JSON string literal that needs no
/// unescaping (`"` ... `"`, no `\\`, no control character), taken out of `text`.
fn plain_json_string(text: &mut String) -> Option<String> {
    let b = text.as_bytes();
    let plain = b.len() >= 2
        && b[0] == b'"'
        && b[b.len() - 1] == b'"'
        && b[1..b.len() - 1].iter().all(|&c| c != b'"' && c != b'\\' && c >= 0x20);
    if !plain {
        return None;
    }
    let mut s = std::mem::take(text);
    s.pop();
    s.remove(0);
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shortcut for plain JSON strings gives serde_json's value, or
    /// leaves the text to serde_json (and its error).
    #[test]
    fn a_plain_json_string_value_is_taken_as_serde_json_would_parse_it() {
        let cases = [
            r#""high""#,
            r#""""#,
            r#""é ✓ 漢""#,
            r#""a\"b""#,
            r#""a\nb""#,
            r#""\u00e9""#,
            "\"tab\there\"",
            r#""a" "b""#,
            r#"""#,
            r#"x"high""#,
            r#""high"x"#,
            "3",
            "null",
            r#"{"a":1}"#,
        ];
        for text in cases {
            let mut own = text.to_string();
            let fast = plain_json_string(&mut own);
            let serde = serde_json::from_str::<Value>(text);
            match fast {
                Some(s) => assert_eq!(Value::String(s), serde.as_ref().expect(text).clone(), "{text}"),
                None => assert_eq!(own, text, "left whole for serde_json: {text}"),
            }
            let checked = Edits::check(vec![Edit::SetExtra("k".into(), ExtraValue::Text(text.into()))]);
            match serde {
                Ok(v) => match checked.expect(text).as_slice() {
                    [Edit::SetExtra(_, ExtraValue::Json(got))] => assert_eq!(got, &v, "{text}"),
                    other => panic!("{text}: {other:?}"),
                },
                Err(_) => assert!(checked.is_err(), "{text} is not JSON"),
            }
        }
    }

    fn event() -> Event {
        serde_json::from_value(serde_json::json!({
            "schema_version": 1, "cluster": "c", "api": "core/v1", "watch_type": "ADDED",
            "uid": "u-1", "resource_version": "7", "name": "e", "namespace": "ns",
            "type": "Warning", "reason": "BackOff", "message": "old", "note": "old", "action": null,
            "object": {"kind": "Pod", "name": "p"}, "related": null,
            "reporting_controller": null, "reporting_instance": null,
            "count": 1, "count_delta": 1, "first_timestamp": null, "last_timestamp": null,
            "timestamp": "2026-01-01T00:00:00Z",
            "labels": {"app": "web", "team": "old"}, "annotations": {"a": "1"},
            "extra": {"keep": true}
        }))
        .unwrap()
    }

    fn s(x: &str) -> String {
        x.to_string()
    }

    fn text(x: &str) -> ExtraValue {
        ExtraValue::Text(x.to_string())
    }

    #[test]
    fn applies_in_order() {
        let mut ev = event();
        let edits = Edits::check(vec![
            Edit::SetLabel(s("team"), s("a")),
            Edit::SetLabel(s("team"), s("b")),
            Edit::RemoveLabel(s("app")),
            Edit::SetLabel(s("app"), s("api")),
            Edit::SetAnnotation(s("b"), s("2")),
            Edit::RemoveAnnotation(s("a")),
            Edit::SetExtra(s("severity"), text("\"high\"")),
            Edit::SetExtra(s("n"), ExtraValue::Json(serde_json::json!({"x": [1, 2]}))),
            Edit::SetExtra(s("severity"), text("3")),
            Edit::RemoveExtra(s("keep")),
            Edit::SetMessage(s("new text")),
        ])
        .unwrap();
        assert_eq!(edits.len(), 11);
        edits.apply(&mut ev);
        let want_labels = [("app", "api"), ("team", "b")].map(|(k, v)| (s(k), s(v)));
        assert_eq!(ev.labels, want_labels.into_iter().collect());
        assert_eq!(ev.annotations, [(s("b"), s("2"))].into_iter().collect());
        assert_eq!(
            serde_json::Value::Object(ev.extra.clone()),
            serde_json::json!({"severity": 3, "n": {"x": [1, 2]}})
        );
        assert_eq!(ev.message.as_deref(), Some("new text"));
        assert_eq!(ev.note.as_deref(), Some("new text"));
        assert_eq!((ev.uid.as_str(), ev.resource_version.as_str()), ("u-1", "7"));
    }

    #[test]
    fn a_label_if_absent_is_a_default_that_sees_the_earlier_edits() {
        let mut ev = event();
        Edits::check(vec![
            // The event has team=old: kept.
            Edit::SetLabelIfAbsent(s("team"), s("default")),
            // No `owner` label: set, and a second default does not overwrite it.
            Edit::SetLabelIfAbsent(s("owner"), s("first")),
            Edit::SetLabelIfAbsent(s("owner"), s("second")),
            // Removed, then defaulted: set.
            Edit::RemoveLabel(s("app")),
            Edit::SetLabelIfAbsent(s("app"), s("fallback")),
        ])
        .unwrap()
        .apply(&mut ev);
        let want = [("app", "fallback"), ("owner", "first"), ("team", "old")].map(|(k, v)| (s(k), s(v)));
        assert_eq!(ev.labels, want.into_iter().collect());
        let e = Edits::check(vec![Edit::SetLabelIfAbsent(s(""), s("x"))]).unwrap_err();
        assert!(
            e.message.contains("edit #1 (set-label-if-absent)") && e.message.contains("empty"),
            "{}",
            e.message
        );
    }

    #[test]
    fn removing_a_missing_key_changes_nothing() {
        let mut ev = event();
        let before = ev.clone();
        Edits::check(vec![
            Edit::RemoveLabel(s("nope")),
            Edit::RemoveAnnotation(s("nope")),
            Edit::RemoveExtra(s("nope")),
        ])
        .unwrap()
        .apply(&mut ev);
        assert_eq!(ev, before);
    }

    #[test]
    fn set_extra_needs_json() {
        let e = Edits::check(vec![
            Edit::SetLabel(s("team"), s("x")),
            Edit::SetExtra(s("severity"), text("high")),
        ])
        .unwrap_err();
        assert_eq!(e.kind, FailureKind::InvalidOutput);
        assert!(e.message.contains("edit #2 (set-extra)"), "{e}");
        assert!(e.message.contains("\"severity\""), "{e}");
        assert!(e.message.contains("not JSON"), "{e}");
    }

    #[test]
    fn keys_must_not_be_empty() {
        for edit in [
            Edit::SetLabel(s(""), s("x")),
            Edit::RemoveLabel(s("")),
            Edit::SetAnnotation(s(""), s("x")),
            Edit::RemoveAnnotation(s("")),
            Edit::SetExtra(s(""), text("1")),
            Edit::RemoveExtra(s("")),
        ] {
            let name = edit.name();
            let e = Edits::check(vec![edit]).unwrap_err();
            assert_eq!(e.kind, FailureKind::InvalidOutput);
            assert!(e.message.contains(name) && e.message.contains("key is empty"), "{e}");
        }
        // The message has no key: an empty message is allowed.
        assert!(Edits::check(vec![Edit::SetMessage(String::new())]).is_ok());
    }

    #[test]
    fn all_or_nothing() {
        // The first edits are fine, the last is not: the event must not change.
        let ev = event();
        let r = Edits::check(vec![
            Edit::SetLabel(s("team"), s("new")),
            Edit::SetMessage(s("changed")),
            Edit::RemoveExtra(s("")),
        ]);
        assert!(r.is_err());
        assert_eq!(ev, event());
        // applied_to leaves the input alone.
        let edits = Edits::check(vec![Edit::SetLabel(s("team"), s("new"))]).unwrap();
        let out = edits.applied_to(&ev);
        assert_eq!(out.labels["team"], "new");
        assert_eq!(ev.labels["team"], "old");
    }

    #[test]
    fn an_empty_list_is_a_keep() {
        let mut ev = event();
        let edits = Edits::check(Vec::new()).unwrap();
        assert!(edits.is_empty());
        edits.apply(&mut ev);
        assert_eq!(ev, event());
    }
}
