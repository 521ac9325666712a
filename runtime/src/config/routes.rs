//! `[[routes]]`: the routing table as written, and its validation.
//!
//! A route matches on type, reason, namespace, kind and reporting controller,
//! names the filters to run and the exporters to send to, and either stops the
//! evaluation or lets it `continue`. A `default` route takes what nothing else
//! took. `runtime::route` evaluates the compiled table.

use std::collections::HashSet;

use serde::Deserialize;
use toml::Spanned;

use super::pattern::{FieldMatcher, SpannedSpec};
use super::{ExporterConfig, FilterConfig, Problems};

/// The five fields a route can match, in a fixed order.
pub const FIELDS: [&str; 5] = ["type", "reason", "namespace", "kind", "reporting_controller"];

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    #[serde(rename = "type")]
    pub type_: Option<SpannedSpec>,
    pub reason: Option<SpannedSpec>,
    pub namespace: Option<SpannedSpec>,
    pub kind: Option<SpannedSpec>,
    pub reporting_controller: Option<SpannedSpec>,
}

impl RouteMatch {
    /// The matchers in [`FIELDS`] order.
    pub fn specs(&self) -> [Option<&SpannedSpec>; 5] {
        [
            self.type_.as_ref(),
            self.reason.as_ref(),
            self.namespace.as_ref(),
            self.kind.as_ref(),
            self.reporting_controller.as_ref(),
        ]
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub name: Spanned<String>,
    #[serde(default, rename = "match")]
    pub match_: RouteMatch,
    /// Filters and enrichers to run, in order, before the exporters.
    #[serde(default)]
    pub filters: Vec<Spanned<String>>,
    /// Exporters to send to. Empty: matched events are dropped on purpose.
    #[serde(default)]
    pub exporters: Vec<Spanned<String>>,
    /// Go on evaluating later routes after this one matched.
    #[serde(default, rename = "continue")]
    pub continue_: bool,
    /// Take only events no other route took.
    #[serde(default)]
    pub default: bool,
    /// Filled in by validation: the compiled matchers in [`FIELDS`] order.
    #[serde(skip)]
    pub compiled: [Option<FieldMatcher>; 5],
}

pub(crate) fn validate(
    routes: &mut [RouteConfig],
    exporters: &[ExporterConfig],
    filters: &[FilterConfig],
    problems: &mut Problems<'_>,
) {
    let exporter_names: HashSet<&str> = exporters.iter().map(|e| e.name.as_str()).collect();
    let filter_names: HashSet<&str> = filters.iter().map(|f| f.name.as_str()).collect();
    let mut names = HashSet::new();
    let mut default_seen = false;
    for route in routes.iter_mut() {
        if route.name.get_ref().is_empty() {
            problems.at(route.name.span(), "a route name cannot be empty");
        } else if !names.insert(route.name.get_ref().clone()) {
            problems.at(
                route.name.span(),
                format!("route `{}` is defined twice", route.name.get_ref()),
            );
        }
        if route.default {
            if default_seen {
                problems.at(route.name.span(), "only one route can be `default = true`");
            }
            default_seen = true;
            if route.match_.specs().iter().any(Option::is_some) {
                problems.at(
                    route.name.span(),
                    format!(
                        "default route `{}` cannot have a `match`: it takes what no other route took",
                        route.name.get_ref()
                    ),
                );
            }
        }
        for exp in &route.exporters {
            if !exporter_names.contains(exp.get_ref().as_str()) {
                let mut known: Vec<&str> = exporter_names.iter().copied().collect();
                known.sort_unstable();
                problems.at(
                    exp.span(),
                    format!(
                        "route `{}` sends to exporter `{}`, which is not defined (defined: {})",
                        route.name.get_ref(),
                        exp.get_ref(),
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                );
            }
        }
        for filter in &route.filters {
            if !filter_names.contains(filter.get_ref().as_str()) {
                let mut known: Vec<&str> = filter_names.iter().copied().collect();
                known.sort_unstable();
                problems.at(
                    filter.span(),
                    format!(
                        "route `{}` runs filter `{}`, which is not defined in [[filters]] (defined: {})",
                        route.name.get_ref(),
                        filter.get_ref(),
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                );
            }
        }
        let mut compiled: [Option<FieldMatcher>; 5] = Default::default();
        for (slot, spec) in compiled.iter_mut().zip(route.match_.specs()) {
            if let Some(spec) = spec {
                match spec.0.compile() {
                    Ok(m) => *slot = Some(m),
                    Err(errs) => errs.into_iter().for_each(|(span, msg)| problems.at(span, msg)),
                }
            }
        }
        route.compiled = compiled;
    }
}
