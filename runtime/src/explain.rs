//! `route explain`: which routes and exporters an event would take, and why.
//! Accepts either API's raw Event JSON or the normalized form.

use std::fmt::Write;
use std::sync::Arc;

use crate::config::Config;
use crate::event::{Api, Event, NormalizeOptions, RawEvent, WatchType, normalize};
use crate::route::RouteTable;

#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error("{file}: not JSON: {source}")]
    Json {
        file: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{file}: {message}")]
    Shape { file: String, message: String },
}

/// Reads an event in any of the accepted forms.
pub fn parse_event(text: &str, file: &str, cluster: &str) -> Result<Event, ExplainError> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|source| ExplainError::Json {
        file: file.to_string(),
        source,
    })?;
    let shape = |message: String| ExplainError::Shape {
        file: file.to_string(),
        message,
    };
    if value.get("schema_version").is_some() {
        return serde_json::from_value(value).map_err(|e| shape(format!("not a valid normalized event: {e}")));
    }
    let api_version = value.get("apiVersion").and_then(|v| v.as_str()).unwrap_or("");
    let api = Api::from_api_version(api_version).ok_or_else(|| {
        shape(format!(
            "apiVersion `{api_version}` is neither `v1` nor `events.k8s.io/v1`, and there is no `schema_version` (normalized form)"
        ))
    })?;
    let raw: RawEvent = serde_json::from_value(value).map_err(|e| shape(format!("not a valid {api} Event: {e}")))?;
    let opts = NormalizeOptions {
        cluster: Arc::from(cluster),
        include_raw: false,
    };
    normalize(api, raw, WatchType::Added, None, &opts).map_err(|e| shape(e.to_string()))
}

/// The explanation as text.
pub fn explain(config: &Config, event: &Event) -> String {
    let table = RouteTable::new(config);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "event {} type={:?} reason={:?} namespace={:?} kind={:?} reporting_controller={:?}",
        event.describe(),
        event.type_.as_deref().unwrap_or(""),
        event.reason.as_deref().unwrap_or(""),
        event.namespace,
        event.kind(),
        event.reporting_controller.as_deref().unwrap_or("")
    );
    let mut exporters: Vec<&str> = Vec::new();
    for (v, route) in table.explain(event).iter().zip(table.routes()) {
        let _ = writeln!(
            out,
            "route {:?}: {}",
            v.route,
            if v.taken { "TAKEN" } else { "not taken" }
        );
        for r in &v.reasons {
            let _ = writeln!(out, "  - {r}");
        }
        if v.taken {
            if !route.filters.is_empty() {
                let _ = writeln!(out, "  filters: {}", route.filters.join(" → "));
            }
            let names: Vec<&str> = route
                .exporters
                .iter()
                .map(|&i| config.exporters[i].name.as_str())
                .collect();
            let _ = writeln!(
                out,
                "  exporters: {}",
                if names.is_empty() {
                    "(none: dropped on purpose)".to_string()
                } else {
                    names.join(", ")
                }
            );
            for n in names {
                if !exporters.contains(&n) {
                    exporters.push(n);
                }
            }
        }
    }
    if table.explain(event).iter().any(|v| v.taken) {
        let _ = writeln!(
            out,
            "result: sent to {}",
            if exporters.is_empty() {
                "no exporter".to_string()
            } else {
                exporters.join(", ")
            }
        );
    } else {
        let _ = writeln!(
            out,
            "result: unrouted (counted in event_collector_events_unrouted and dropped)"
        );
    }
    out
}
