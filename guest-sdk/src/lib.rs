//! # event-collector-guest
//!
//! Write event-collector filter and enricher modules in Rust. A module is a
//! WebAssembly component (target `wasm32-wasip2`) for the world
//! `event-collector:filter/event-filter@0.3.0` (`wit/filter.wit`, shipped in
//! this crate). The host calls `init(config)` once per instance and then
//! `process(fields)` for every event; your `process` gets the extracted
//! [`EventFields`] and an [`EventJson`] handle that fetches the whole event
//! from the host only if you call it (a filter that decides from the fields
//! never pays for the JSON). The module answers
//! [`Verdict::Keep`], [`Verdict::Drop`], [`Verdict::Edit`] (a few changes,
//! built with [`Edits`]) or [`Verdict::Replace`] (a whole new event).
//!
//! Two ways to write one:
//!
//! A function, when the filter needs no config and no state:
//!
//! ```ignore
//! use event_collector_guest::prelude::*;
//!
//! #[filter]
//! fn process(fields: &EventFields, _event: &EventJson) -> Result<Verdict, String> {
//!     Ok(Verdict::keep_if(fields.event_type == "Warning"))
//! }
//! ```
//!
//! A type implementing [`Filter`], built from the config by `init`:
//!
//! ```ignore
//! use event_collector_guest::prelude::*;
//!
//! #[derive(serde::Deserialize)]
//! struct AddOrigin { label: String }
//!
//! impl Filter for AddOrigin {
//!     fn init(config: &str) -> Result<Self, String> { config::parse(config) }
//!     fn process(&mut self, fields: &EventFields, _event: &EventJson) -> Result<Verdict, String> {
//!         // Say only what changes: no parsing, no serializing.
//!         Ok(Edits::new()
//!             .label("origin", self.label.as_str())
//!             .extra("warning", fields.event_type == "Warning")
//!             .into())
//!     }
//! }
//! export_filter!(AddOrigin);
//! ```
//!
//! A label the event may already carry needs no JSON to be respected:
//! [`Edits::label_if_absent`] lets the host set it only when it is absent.
//! When a filter needs more than the fields, [`EventJson::label`] reads one
//! label, [`EventJson::parse`] gives the whole event typed and
//! [`EventJson::get`] the JSON text; the first of them asks the host for the
//! JSON (serialized and copied for this call only). [`Verdict::Replace`]
//! sends a changed copy back (the host parses and checks it again: several
//! times the cost of an edit).
//!
//! Build with `cargo build --release --target wasm32-wasip2` and a
//! `crate-type = ["cdylib"]` library: the `.wasm` is the component.

pub mod edit;
pub mod event;
pub mod json;
pub mod log;

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "event-filter",
        path: "wit",
        pub_export_macro: true,
        export_macro_name: "__export_event_filter",
        default_bindings_module: "::event_collector_guest::bindings",
    });
}

pub use edit::{Edit, Edits};
pub use event::{Event, ObjectRef, SCHEMA_VERSION};
pub use event_collector_guest_macros::filter;
pub use json::EventJson;
pub use log::Level;

/// What the host extracted from the event, so a filter can decide without
/// parsing JSON: `event_type`, `reason`, `namespace`, `kind` and `name` (kind
/// and name of the involved object). An absent value is `""`.
pub use bindings::event_collector::filter::types::EventFields;

/// The JSON re-export, so guests need no direct dependency on it.
pub use serde_json;

/// What a filter decides about one event.
// `Replace(Event)` is large, but a verdict lives for one call: boxing would
// only make `Verdict::Replace(ev)` noisier for authors.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Pass the event on unchanged.
    Keep,
    /// Drop it (the host counts drops per filter).
    Drop,
    /// Pass this event on instead (an enricher's output). The host
    /// re-validates it against the schema.
    Replace(Event),
    /// Like `Replace`, with JSON the filter produced itself (it must be a
    /// normalized event).
    ReplaceJson(String),
    /// Pass the event on with these changes, applied in order (since
    /// contract 0.2.0). Build the list with [`Edits`]. Much cheaper than `Replace`
    /// for an enricher: the event is neither parsed nor sent back. One
    /// invalid edit (an empty key) fails the call and none is applied.
    Edit(Vec<Edit>),
}

impl Verdict {
    /// `Keep` when `cond` holds, else `Drop`.
    pub fn keep_if(cond: bool) -> Verdict {
        if cond { Verdict::Keep } else { Verdict::Drop }
    }

    fn into_wit(self) -> bindings::event_collector::filter::types::Verdict {
        use bindings::event_collector::filter::types::Verdict as W;
        match self {
            Verdict::Keep => W::Keep,
            Verdict::Drop => W::Drop,
            Verdict::Replace(ev) => W::Replace(ev.to_json()),
            Verdict::ReplaceJson(json) => W::Replace(json),
            Verdict::Edit(edits) => W::Edit(edits.into_iter().map(Edit::into_wit).collect()),
        }
    }
}

/// A filter or enricher with config and state. One value lives per module
/// instance: `init` builds it, `process` runs for every event.
///
/// Export it with [`export_filter!`]. An `Err` from `process` sends the event
/// down the filter's `on_error` path; a panic traps, and the host
/// re-instantiates the module (calling `init` again) before the next event.
pub trait Filter: Sized + 'static {
    /// Builds the filter from its config: the `config` table from the
    /// collector's TOML as JSON, `"{}"` when there is none. An `Err` rejects
    /// the module. [`config::parse`] deserializes it into your own type.
    fn init(config: &str) -> Result<Self, String>;

    /// Decides about one event. `fields` needs no parsing; `event` fetches
    /// the full normalized event JSON from the host only when you use it
    /// ([`EventJson::get`], [`EventJson::parse`], [`EventJson::label`]).
    fn process(&mut self, fields: &EventFields, event: &EventJson) -> Result<Verdict, String>;
}

/// Helpers for the `config` JSON handed to [`Filter::init`].
pub mod config {
    use serde::de::DeserializeOwned;

    /// Deserializes the config JSON into `T`, with a readable error.
    /// Use `#[serde(default)]` on `T` for optional keys and
    /// `#[serde(deny_unknown_fields)]` to reject typos.
    pub fn parse<T: DeserializeOwned>(config: &str) -> Result<T, String> {
        serde_json::from_str(config).map_err(|e| format!("invalid filter config: {e}"))
    }
}

/// `use event_collector_guest::prelude::*;` brings in what a filter needs.
pub mod prelude {
    pub use crate::config;
    pub use crate::edit;
    pub use crate::log;
    pub use crate::{Edit, Edits, Event, EventFields, EventJson, Filter, ObjectRef, Verdict, export_filter, filter};
}

/// Exports a type implementing [`Filter`] as this component's `filter`
/// interface. Use it once, in the `cdylib` crate.
#[macro_export]
macro_rules! export_filter {
    ($ty:ty) => {
        const _: () = {
            ::std::thread_local! {
                static STATE: ::std::cell::RefCell<::core::option::Option<$ty>> =
                    const { ::std::cell::RefCell::new(::core::option::Option::None) };
            }
            struct Export;
            impl $crate::bindings::exports::event_collector::filter::filter::Guest for Export {
                fn init(config: ::std::string::String) -> ::core::result::Result<(), ::std::string::String> {
                    $crate::__private::init::<$ty>(&STATE, &config)
                }
                fn process(
                    fields: $crate::EventFields,
                ) -> ::core::result::Result<$crate::__private::WitVerdict, ::std::string::String> {
                    $crate::__private::process::<$ty>(&STATE, &fields)
                }
            }
    $crate::bindings::__export_event_filter!(Export with_types_in $crate::bindings);
        };
    };
}

/// Exports a free function `fn(&EventFields, &EventJson) -> Result<Verdict, String>`
/// as `process` (what `#[filter]` expands to). `init` accepts any config.
#[macro_export]
macro_rules! export_filter_fn {
    ($f:path) => {
        const _: () = {
            struct Export;
            impl $crate::bindings::exports::event_collector::filter::filter::Guest for Export {
                fn init(_config: ::std::string::String) -> ::core::result::Result<(), ::std::string::String> {
                    $crate::__private::install_panic_hook();
                    ::core::result::Result::Ok(())
                }
                fn process(
                    fields: $crate::EventFields,
                ) -> ::core::result::Result<$crate::__private::WitVerdict, ::std::string::String> {
                    $crate::__private::process_fn($f, &fields)
                }
            }
    $crate::bindings::__export_event_filter!(Export with_types_in $crate::bindings);
        };
    };
}

#[doc(hidden)]
pub mod __private {
    use std::cell::RefCell;
    use std::thread::LocalKey;

    use crate::{EventFields, EventJson, Filter, Verdict};

    pub use crate::bindings::event_collector::filter::types::Verdict as WitVerdict;

    pub type State<F> = LocalKey<RefCell<Option<F>>>;

    pub fn init<F: Filter>(state: &'static State<F>, config: &str) -> Result<(), String> {
        install_panic_hook();
        let filter = F::init(config)?;
        state.with(|s| *s.borrow_mut() = Some(filter));
        Ok(())
    }

    pub fn process<F: Filter>(state: &'static State<F>, fields: &EventFields) -> Result<WitVerdict, String> {
        state.with(|s| {
            let mut slot = s.borrow_mut();
            if slot.is_none() {
                // The host always calls init first; be forgiving anyway.
                install_panic_hook();
                *slot =
                    Some(F::init("{}").map_err(|e| format!("process before init, and init(\"{{}}\") failed: {e}"))?);
            }
            let filter = slot.as_mut().expect("initialized above");
            filter.process(fields, &EventJson::from_host()).map(Verdict::into_wit)
        })
    }

    pub fn process_fn(
        f: fn(&EventFields, &EventJson) -> Result<Verdict, String>,
        fields: &EventFields,
    ) -> Result<WitVerdict, String> {
        f(fields, &EventJson::from_host()).map(Verdict::into_wit)
    }

    /// Sends the panic message to the host log before the trap, so the
    /// collector's log says why the module died.
    pub fn install_panic_hook() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            std::panic::set_hook(Box::new(|info| {
                crate::log::error(&format!("panic: {info}"));
            }));
        });
    }
}
