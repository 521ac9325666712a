//! Keeps only `Warning` events. Decides on the fields the host extracts, so it
//! never parses the event JSON.

use event_collector_guest::prelude::*;

#[filter]
fn process(fields: &EventFields, _event: &str) -> Result<Verdict, String> {
    Ok(Verdict::keep_if(fields.event_type == "Warning"))
}
