//! Test guest: behaviour by event reason (fault injection), else by `mode`.
//!
//! Reasons: Loop (never returns), Bomb (allocates until the memory cap),
//! Trap (panics: `unreachable`), Garbage (replace with non-JSON), Invalid
//! (replace with JSON that is not an event), ChangeUid (replace with another
//! uid), Error (returns an error), Open (reads `path` from the config),
//! Env (reads `var` from the config), Log (logs through the host), Drop, Enrich,
//! Count, Edit (the Enrich changes as an edit verdict, and more), BadEditJson and
//! BadEditKey (an invalid edit list), Peek (reads the event JSON twice and
//! copies `labels.team` into `extra.saw_team` with an edit), Default (0.3.0
//! only: `set-label-if-absent` for `team` and `owner`). Anything else:
//! `mode` from the config ("keep" by default). It targets contract 0.3.0 (the
//! event JSON only on request, through `host.event`); built with the
//! `contract-0-2` feature it targets 0.2.0 (the JSON with every call), with
//! `contract-0-1` the 0.1.0 contract, which has no edit verdict: the Edit and
//! Peek reasons then keep.

use std::cell::{Cell, RefCell};

use serde_json::{Value, json};

// The current contract (0.3.0); with a `contract-0-*` feature an older one,
// to prove the host still runs such components.
#[cfg(not(any(feature = "contract-0-1", feature = "contract-0-2")))]
wit_bindgen::generate!({
    path: "../../../../guest-sdk/wit",
    world: "event-filter",
});
#[cfg(feature = "contract-0-2")]
wit_bindgen::generate!({
    path: "../../../../guest-sdk/wit/compat/0.2.0",
    world: "event-filter",
});
#[cfg(feature = "contract-0-1")]
wit_bindgen::generate!({
    path: "../../../../guest-sdk/wit/compat/0.1.0",
    world: "event-filter",
});

use event_collector::filter::host::log;
use event_collector::filter::types::{EventFields, Level, Verdict};
use exports::event_collector::filter::filter::Guest;

thread_local! {
    static CONFIG: RefCell<Value> = RefCell::new(json!({}));
    static COUNT: Cell<u64> = const { Cell::new(0) };
}

fn config_str(key: &str) -> Option<String> {
    CONFIG.with(|c| c.borrow().get(key).and_then(|v| v.as_str()).map(str::to_string))
}

/// The event's JSON, fetched when a reason needs it.
type Json<'a> = &'a dyn Fn() -> String;

fn enrich(event: Json, fields: &EventFields) -> Result<Verdict, String> {
    let mut v: Value = serde_json::from_str(&event()).map_err(|e| e.to_string())?;
    let team = match fields.namespace.as_str() {
        "payments" | "billing" => "money",
        "" => "cluster",
        _ => "platform",
    };
    let obj = v.as_object_mut().ok_or("event is not an object")?;
    let extra = obj.entry("extra").or_insert_with(|| json!({}));
    extra["team"] = json!(team);
    extra["enriched_by"] = json!("test-guest");
    if let Some(labels) = obj.get_mut("labels").and_then(Value::as_object_mut) {
        labels.insert("team".into(), json!(team));
    }
    Ok(Verdict::Replace(v.to_string()))
}

/// The `enrich` changes as an edit list (contract 0.2.0), plus one of each
/// other kind: no JSON is parsed or written.
#[cfg(not(feature = "contract-0-1"))]
fn edit(fields: &EventFields) -> Result<Verdict, String> {
    use event_collector::filter::types::Edit;
    let team = match fields.namespace.as_str() {
        "payments" | "billing" => "money",
        "" => "cluster",
        _ => "platform",
    };
    Ok(Verdict::Edit(vec![
        Edit::SetExtra(("team".into(), format!("{team:?}"))),
        Edit::SetExtra(("enriched_by".into(), r#""test-guest""#.into())),
        Edit::SetLabel(("team".into(), "first".into())),
        Edit::SetLabel(("team".into(), team.into())),
        Edit::RemoveLabel("tier".into()),
        Edit::RemoveLabel("no-such-label".into()),
        Edit::SetAnnotation(("edited".into(), "yes".into())),
        Edit::RemoveAnnotation("team".into()),
        Edit::SetExtra(("gone".into(), "1".into())),
        Edit::RemoveExtra("gone".into()),
        Edit::SetMessage(format!("edited: {}", fields.reason)),
    ]))
}

/// Defaults for `team` and `owner` (contract 0.3.0's `set-label-if-absent`).
#[cfg(not(any(feature = "contract-0-1", feature = "contract-0-2")))]
fn defaults() -> Result<Verdict, String> {
    use event_collector::filter::types::Edit;
    Ok(Verdict::Edit(vec![
        Edit::SetLabelIfAbsent(("team".into(), "default".into())),
        Edit::SetLabelIfAbsent(("owner".into(), "test-guest".into())),
    ]))
}

/// A valid edit followed by an invalid one (`what` says which).
#[cfg(not(feature = "contract-0-1"))]
fn bad_edit(what: &str) -> Result<Verdict, String> {
    use event_collector::filter::types::Edit;
    let bad = match what {
        "BadEditJson" => Edit::SetExtra(("severity".into(), "high".into())),
        _ => Edit::SetLabel(("".into(), "x".into())),
    };
    Ok(Verdict::Edit(vec![Edit::SetLabel(("team".into(), "x".into())), bad]))
}

/// Reads the JSON twice (the host must give the same text) and copies
/// `labels.team` (set by an earlier filter in the chain) into `extra.saw_team`.
#[cfg(not(feature = "contract-0-1"))]
fn peek(event: Json) -> Result<Verdict, String> {
    use event_collector::filter::types::Edit;
    let (first, second) = (event(), event());
    if first != second {
        return Err("host.event changed between two requests".into());
    }
    let v: Value = serde_json::from_str(&first).map_err(|e| e.to_string())?;
    let team = v["labels"]["team"].as_str().unwrap_or("(none)");
    Ok(Verdict::Edit(vec![Edit::SetExtra(("saw_team".into(), format!("{team:?}")))]))
}

fn count(event: Json) -> Result<Verdict, String> {
    let n = COUNT.with(|c| {
        c.set(c.get() + 1);
        c.get()
    });
    let mut v: Value = serde_json::from_str(&event()).map_err(|e| e.to_string())?;
    v["extra"] = json!({ "count": n });
    Ok(Verdict::Replace(v.to_string()))
}

fn act(what: &str, fields: &EventFields, event: Json) -> Result<Verdict, String> {
    match what {
        "Loop" => loop {
            std::hint::black_box(());
        },
        "Bomb" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                let mut chunk = vec![0u8; 1 << 20];
                chunk[0] = 1;
                hoard.push(std::hint::black_box(chunk));
            }
        }
        "Trap" => panic!("the test guest was told to trap"),
        "Garbage" => Ok(Verdict::Replace("this is not json".into())),
        "Invalid" => Ok(Verdict::Replace(r#"{"not":"an event"}"#.into())),
        "ChangeUid" => {
            let mut v: Value = serde_json::from_str(&event()).map_err(|e| e.to_string())?;
            v["uid"] = json!("another-uid");
            Ok(Verdict::Replace(v.to_string()))
        }
        "Error" => Err("the test guest refuses this event".into()),
        "Open" => {
            let path = config_str("path").unwrap_or_else(|| "/etc/hostname".into());
            match std::fs::read(&path) {
                Ok(_) => Ok(Verdict::Drop),
                Err(e) => Err(format!("cannot open {path}: {e}")),
            }
        }
        "Env" => {
            let var = config_str("var").unwrap_or_else(|| "HOME".into());
            match std::env::var(&var) {
                Ok(val) => {
                    let mut v: Value = serde_json::from_str(&event()).map_err(|e| e.to_string())?;
                    v["extra"] = json!({ "env": val });
                    Ok(Verdict::Replace(v.to_string()))
                }
                Err(_) => Ok(Verdict::Keep),
            }
        }
        "Log" => {
            log(Level::Info, &format!("hello from the test guest about {}", fields.name));
            Ok(Verdict::Keep)
        }
        "Drop" | "drop" => Ok(Verdict::Drop),
        "Enrich" | "enrich" => enrich(event, fields),
        "Count" | "count" => count(event),
        #[cfg(not(feature = "contract-0-1"))]
        "Edit" | "edit" => edit(fields),
        #[cfg(not(feature = "contract-0-1"))]
        "BadEditJson" | "BadEditKey" => bad_edit(what),
        #[cfg(not(feature = "contract-0-1"))]
        "Peek" | "peek" => peek(event),
        #[cfg(not(any(feature = "contract-0-1", feature = "contract-0-2")))]
        "Default" | "default" => defaults(),
        _ => Ok(Verdict::Keep),
    }
}

struct TestGuest;

impl Guest for TestGuest {
    fn init(config: String) -> Result<(), String> {
        let v: Value = serde_json::from_str(&config).map_err(|e| format!("config is not JSON: {e}"))?;
        if v.get("fail_init").and_then(Value::as_bool) == Some(true) {
            return Err("init refused: fail_init is set".into());
        }
        CONFIG.with(|c| *c.borrow_mut() = v);
        Ok(())
    }

    #[cfg(not(any(feature = "contract-0-1", feature = "contract-0-2")))]
    fn process(fields: EventFields) -> Result<Verdict, String> {
        act(&what(&fields), &fields, &event_collector::filter::host::event)
    }

    #[cfg(any(feature = "contract-0-1", feature = "contract-0-2"))]
    fn process(fields: EventFields, event: String) -> Result<Verdict, String> {
        act(&what(&fields), &fields, &|| event.clone())
    }
}

/// What to do: the reason when it names a behaviour, else `mode`.
fn what(fields: &EventFields) -> String {
    match fields.reason.as_str() {
        r @ ("Loop" | "Bomb" | "Trap" | "Garbage" | "Invalid" | "ChangeUid" | "Error" | "Open" | "Env" | "Log"
        | "Drop" | "Enrich" | "Count" | "Edit" | "BadEditJson" | "BadEditKey" | "Peek" | "Default") => r.to_string(),
        _ => config_str("mode").unwrap_or_else(|| "keep".into()),
    }
}

export!(TestGuest);
