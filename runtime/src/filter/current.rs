//! The event a filter call works on and its JSON, serialized only when
//! something reads it.
//!
//! Core modules and components built against contract 0.1/0.2 receive the
//! JSON with every call, so it is serialized before their first call on an
//! event. A 0.3 component receives only the extracted fields and asks for
//! the JSON through `host.event`: for it, the event is lent to the store for
//! the call ([`Lent`]) and serialized there on the first request. Either way
//! an event is serialized at most once per chain until a filter changes it,
//! and the result is kept for the exporters' record when it is still valid.

use std::sync::Arc;

use crate::event::{Api, Event, ObjectRef, WatchType};

/// The JSON of the event as it is now: the caller's bytes until a filter
/// changes the event, then serialized on demand into a reused buffer.
pub struct EventJson<'a> {
    /// Checked to be UTF-8 only when a filter reads it (most 0.3 calls do not).
    caller: Option<&'a [u8]>,
    buf: Vec<u8>,
    /// `buf` holds the event as it is now.
    valid: bool,
}

impl<'a> EventJson<'a> {
    /// `caller`: the event already serialized, if the caller has it; `buf`: a
    /// buffer to reuse.
    pub fn new(caller: Option<&'a [u8]>, buf: Vec<u8>) -> Self {
        EventJson {
            caller,
            buf,
            valid: false,
        }
    }

    /// The JSON of `ev` (which must be the event this tracks).
    pub fn get(&mut self, ev: &Event) -> &str {
        if let Some(j) = self.caller {
            match std::str::from_utf8(j) {
                Ok(j) => return j,
                // Not text: serialized here instead, as if the caller had none.
                Err(_) => self.caller = None,
            }
        }
        if !self.valid {
            serialize_into(&mut self.buf, ev);
            self.valid = true;
        }
        std::str::from_utf8(&self.buf).unwrap_or("")
    }

    /// The event changed: what was serialized is stale.
    pub fn changed(&mut self) {
        self.caller = None;
        self.valid = false;
    }

    /// The JSON serialized here, if it still matches the event (not the caller's).
    pub fn serialized(&self) -> Option<&[u8]> {
        (self.caller.is_none() && self.valid).then_some(&self.buf[..])
    }

    /// The buffer, to reuse for the next event.
    pub fn into_buf(self) -> Vec<u8> {
        self.buf
    }
}

fn serialize_into(buf: &mut Vec<u8>, ev: &Event) {
    buf.clear();
    crate::event::json::write_event(buf, ev);
}

/// What a 0.3 component's store holds: during `process`, the event (lent
/// by the caller) and its JSON buffer, for `host.event`; a placeholder
/// between calls.
pub struct Lent {
    event: Event,
    buf: Vec<u8>,
    valid: bool,
    active: bool,
    /// Calls of `host.event` since [`take_requests`](Self::take_requests).
    requests: u64,
}

impl Default for Lent {
    fn default() -> Self {
        Lent {
            event: placeholder(),
            buf: Vec::new(),
            valid: false,
            active: false,
            requests: 0,
        }
    }
}

impl Lent {
    /// Takes `event` and the JSON's buffer for the length of one call.
    /// [`give_back`](Self::give_back) must follow, also after a panic.
    pub fn lend(&mut self, event: &mut Event, json: &mut EventJson<'_>) {
        std::mem::swap(&mut self.event, event);
        std::mem::swap(&mut self.buf, &mut json.buf);
        self.valid = json.caller.is_none() && json.valid;
        self.active = true;
    }

    /// Returns what [`lend`](Self::lend) took, with the JSON if the guest
    /// asked for it.
    pub fn give_back(&mut self, event: &mut Event, json: &mut EventJson<'_>) {
        std::mem::swap(&mut self.event, event);
        std::mem::swap(&mut self.buf, &mut json.buf);
        if json.caller.is_none() {
            json.valid = self.valid;
        }
        self.valid = false;
        self.active = false;
    }

    /// How many times the guest called `host.event` since the last time
    /// this was asked (the host adds it to `filter_event_requests`).
    pub fn take_requests(&mut self) -> u64 {
        std::mem::take(&mut self.requests)
    }

    /// `host.event`: the lent event's JSON, serialized on the first request
    /// of a call; "" outside `process`.
    pub fn json(&mut self) -> String {
        if !self.active {
            return String::new();
        }
        self.requests += 1;
        if !self.valid {
            serialize_into(&mut self.buf, &self.event);
            self.valid = true;
        }
        String::from_utf8(self.buf.clone()).unwrap_or_default()
    }
}

/// An empty event that stands in the store between calls (allocates only its cluster name).
fn placeholder() -> Event {
    Event {
        schema_version: crate::event::SCHEMA_VERSION,
        cluster: Arc::from(""),
        api: Api::CoreV1,
        watch_type: WatchType::Added,
        uid: String::new(),
        resource_version: String::new(),
        name: String::new(),
        namespace: String::new(),
        type_: None,
        reason: None,
        message: None,
        note: None,
        action: None,
        object: ObjectRef::default(),
        related: None,
        reporting_controller: None,
        reporting_instance: None,
        count: 0,
        count_delta: 0,
        first_timestamp: None,
        last_timestamp: None,
        timestamp: String::new(),
        labels: Default::default(),
        annotations: Default::default(),
        extra: Default::default(),
        raw: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(uid: &str) -> Event {
        Event {
            uid: uid.into(),
            reason: Some("BackOff".into()),
            ..placeholder()
        }
    }

    #[test]
    fn serialized_once_and_only_when_asked() {
        let e = ev("a");
        let mut j = EventJson::new(None, Vec::new());
        assert!(j.serialized().is_none(), "nothing serialized before a request");
        let first = j.get(&e).to_string();
        assert!(first.contains("\"uid\":\"a\""));
        assert_eq!(j.serialized(), Some(first.as_bytes()));
        j.changed();
        assert!(j.serialized().is_none(), "stale after a change");
    }

    #[test]
    fn the_callers_json_is_used_but_not_reported_as_ours() {
        let e = ev("a");
        let mut j = EventJson::new(Some(b"{\"given\":1}"), Vec::new());
        assert_eq!(j.get(&e), "{\"given\":1}");
        assert!(j.serialized().is_none());
    }

    #[test]
    fn callers_bytes_that_are_not_utf8_are_replaced_by_the_event_serialized() {
        let e = ev("a");
        let mut j = EventJson::new(Some(b"{\"given\":\"\xff\"}"), Vec::new());
        let got = j.get(&e).to_string();
        assert!(got.contains("\"uid\":\"a\""), "{got}");
        assert_eq!(j.serialized(), Some(got.as_bytes()), "ours now, for the record");
    }

    #[test]
    fn a_lent_event_comes_back_with_the_json_the_guest_asked_for() {
        let mut e = ev("lent");
        let mut j = EventJson::new(None, Vec::new());
        let mut store = Lent::default();
        assert_eq!(store.json(), "", "outside a call");
        store.lend(&mut e, &mut j);
        assert_eq!(e.uid, "", "the placeholder stands in while the event is lent");
        let json = store.json();
        assert!(json.contains("\"uid\":\"lent\""), "{json}");
        assert_eq!(store.json(), json, "the second request reuses the first serialization");
        store.give_back(&mut e, &mut j);
        assert_eq!(e.uid, "lent");
        assert_eq!(j.serialized(), Some(json.as_bytes()), "kept for the exporters");
        assert_eq!(store.take_requests(), 2);
        assert_eq!(store.take_requests(), 0, "taken");
        assert_eq!(store.json(), "");
        assert_eq!(store.take_requests(), 0, "a request outside a call is not counted");
    }

    #[test]
    fn a_lent_event_the_guest_never_asked_about_is_not_serialized() {
        let mut e = ev("quiet");
        let mut j = EventJson::new(None, Vec::new());
        let mut store = Lent::default();
        store.lend(&mut e, &mut j);
        store.give_back(&mut e, &mut j);
        assert_eq!(e.uid, "quiet");
        assert!(j.serialized().is_none());
        assert_eq!(store.take_requests(), 0);
    }
}
