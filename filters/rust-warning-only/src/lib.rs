//! Keeps only `Warning` events. Decides on the fields the host extracts, so it
//! never asks for the event JSON (and the host never serializes it for it).

use event_collector_guest::prelude::*;

#[filter]
fn process(fields: &EventFields, _event: &EventJson) -> Result<Verdict, String> {
    Ok(Verdict::keep_if(fields.event_type == "Warning"))
}
