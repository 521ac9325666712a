//! event-collector: keeps Kubernetes Events before the API server forgets them.
//!
//! The data path, one module per stage:
//! [`source`] (watch both Event APIs) → [`event`] (normalize to one schema) →
//! [`route`] (the TOML routing table) → exporters (the `event-collector-exporters`
//! crate), wired by [`pipeline`] with acknowledgements tracked by [`ack`].
//! [`filter`] runs the WASM filter and enricher modules routes name.
//! [`config`] loads and validates the TOML; [`setup`] builds the parts from it;
//! [`app`] runs the whole collector; [`metrics`] counts everything; [`http`]
//! serves /metrics, /healthz and /readyz from the state [`health`] keeps;
//! [`reload`] applies config changes to the running pipeline.

pub mod ack;
pub mod app;
pub mod capped;
pub mod config;
pub mod event;
pub mod event_metrics;
pub mod explain;
pub mod filter;
pub mod generate;
pub mod ha;
pub mod health;
pub mod http;
pub mod metrics;
pub mod pipeline;
pub mod process_memory;
pub mod reload;
pub mod route;
pub mod select;
pub mod setup;
pub mod source;
pub mod spill;
pub mod state;
