//! [`EventJson`]: the current event's JSON, fetched from the host only when a
//! filter asks for it (contract 0.3.0, `host.event`).
//!
//! `process` receives a handle, not the JSON: a filter that decides from
//! [`EventFields`] never calls [`EventJson::get`], and the host then never
//! serializes the event for it nor copies it into the module (about 3–4 µs
//! per 1 KB event). The first `get` (or `parse`, or `label`) in a `process`
//! call asks the host once and keeps the text in the handle; later calls
//! reuse it.
//!
//! ```
//! use event_collector_guest::{Event, EventJson};
//!
//! // In `process`, the SDK hands you the handle; in a unit test, build one.
//! let event = EventJson::new(r#"{"uid":"u1","labels":{"team":"web"}}"#);
//! assert_eq!(event.label("team").unwrap().as_deref(), Some("web"));
//! assert!(event.get().starts_with("{"));
//! ```
//!
//! [`EventFields`]: crate::EventFields

use std::cell::OnceCell;
use std::fmt;

use crate::Event;

/// The event `process` was called for, as normalized JSON
/// (`docs/event-schema.md`), with the changes of the filters before this one.
/// Asked from the host at the first use, at most once per `process` call.
pub struct EventJson {
    json: OnceCell<String>,
}

impl EventJson {
    /// A handle that asks the host (`host.event`) at its first use. Made by
    /// the SDK for each `process` call; only valid during that call.
    #[doc(hidden)]
    pub fn from_host() -> EventJson {
        EventJson { json: OnceCell::new() }
    }

    /// A handle holding JSON you already have: for unit tests of a filter
    /// (run natively, with no host) or to call a `process` function from
    /// your own code.
    pub fn new(json: impl Into<String>) -> EventJson {
        EventJson {
            json: OnceCell::from(json.into()),
        }
    }

    /// The event's normalized JSON. The first call asks the host (the host
    /// serializes the event then, and the text is copied into the module);
    /// later calls in the same `process` call return the same text.
    pub fn get(&self) -> &str {
        self.json
            .get_or_init(crate::bindings::event_collector::filter::host::event)
    }

    /// The whole event, typed ([`Event::parse`] of [`get`](Self::get)).
    pub fn parse(&self) -> Result<Event, String> {
        Event::parse(self.get())
    }

    /// `labels[key]` of the event without parsing all of it
    /// ([`edit::label`](crate::edit::label) of [`get`](Self::get)).
    pub fn label(&self, key: &str) -> Result<Option<String>, String> {
        crate::edit::label(self.get(), key)
    }

    /// Whether the JSON was asked for (or given to [`new`](Self::new)): lets
    /// a test check that a filter decided without it.
    pub fn is_fetched(&self) -> bool {
        self.json.get().is_some()
    }
}

impl fmt::Debug for EventJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.json.get() {
            Some(json) => f.debug_tuple("EventJson").field(json).finish(),
            None => f.write_str("EventJson(<not fetched>)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EV: &str = r#"{"schema_version":1,"cluster":"c","api":"core/v1","watch_type":"ADDED","uid":"u1",
      "resource_version":"7","name":"web.1","namespace":"shop","type":"Warning","reason":"BackOff",
      "message":"m","note":"m","action":null,"object":{"kind":"Pod","namespace":"shop","name":"web",
      "uid":null,"api_version":"v1","field_path":null,"resource_version":null},"related":null,
      "reporting_controller":null,"reporting_instance":null,"count":1,"count_delta":1,
      "first_timestamp":null,"last_timestamp":null,"timestamp":"2026-11-21T10:00:00Z",
      "labels":{"team":"sre"},"annotations":{}}"#;

    #[test]
    fn a_given_json_is_returned_as_is() {
        let e = EventJson::new(EV);
        assert!(e.is_fetched());
        assert_eq!(e.get(), EV);
        // The same text, not a second copy.
        assert!(std::ptr::eq(e.get(), e.get()));
    }

    #[test]
    fn parse_and_label_read_the_json() {
        let e = EventJson::new(EV);
        let ev = e.parse().unwrap();
        assert_eq!(ev.uid, "u1");
        assert_eq!(ev.reason.as_deref(), Some("BackOff"));
        assert_eq!(ev.kind(), "Pod");
        assert_eq!(e.label("team").unwrap().as_deref(), Some("sre"));
        assert_eq!(e.label("app").unwrap(), None);
        assert!(EventJson::new("not json").parse().is_err());
    }

    #[test]
    fn a_host_handle_starts_unfetched() {
        // Only constructed: asking the host needs a wasm host.
        let e = EventJson::from_host();
        assert!(!e.is_fetched());
        assert_eq!(format!("{e:?}"), "EventJson(<not fetched>)");
        assert_eq!(format!("{:?}", EventJson::new("{}")), r#"EventJson("{}")"#);
    }
}
