//! The routing table: which routes an event takes, and so which filters run
//! and which exporters receive it.
//!
//! Routes are evaluated in order. A matching route stops the evaluation unless
//! it says `continue`. The `default` route takes an event only when no other
//! route did. An event that matches nothing is unrouted: the pipeline counts it
//! and drops it.

use crate::config::routes::FIELDS;
use crate::config::{Config, FieldMatcher};
use crate::event::Event;

/// One compiled route.
#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    matchers: [Option<FieldMatcher>; 5],
    /// Filter names, in order.
    pub filters: Vec<String>,
    /// Indices into the config's exporter list.
    pub exporters: Vec<usize>,
    pub continue_: bool,
    pub default: bool,
}

/// The field values a route looks at, in [`FIELDS`] order.
fn values(ev: &Event) -> [&str; 5] {
    [
        ev.type_.as_deref().unwrap_or(""),
        ev.reason.as_deref().unwrap_or(""),
        &ev.namespace,
        ev.kind(),
        ev.reporting_controller.as_deref().unwrap_or(""),
    ]
}

impl Route {
    pub fn matches(&self, ev: &Event) -> bool {
        self.matchers
            .iter()
            .zip(values(ev))
            .all(|(m, v)| m.as_ref().is_none_or(|m| m.matches(v)))
    }
}

/// The compiled routing table.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
    default: Option<usize>,
}

/// Why one route did or did not take an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteVerdict {
    pub route: String,
    pub taken: bool,
    pub reasons: Vec<String>,
}

impl RouteTable {
    /// Compiles the table of a validated config.
    pub fn new(config: &Config) -> RouteTable {
        let index = |name: &str| config.exporters.iter().position(|e| e.name == name);
        let routes: Vec<Route> = config
            .routes
            .iter()
            .map(|r| Route {
                name: r.name.get_ref().clone(),
                matchers: r.compiled.clone(),
                filters: r.filters.iter().map(|f| f.get_ref().clone()).collect(),
                exporters: r.exporters.iter().filter_map(|e| index(e.get_ref())).collect(),
                continue_: r.continue_,
                default: r.default,
            })
            .collect();
        let default = routes.iter().position(|r| r.default);
        RouteTable { routes, default }
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// Appends the indices of the routes `ev` takes to `out` (cleared first).
    pub fn evaluate(&self, ev: &Event, out: &mut Vec<usize>) {
        out.clear();
        for (i, r) in self.routes.iter().enumerate() {
            if !r.default && r.matches(ev) {
                out.push(i);
                if !r.continue_ {
                    break;
                }
            }
        }
        if out.is_empty()
            && let Some(d) = self.default
        {
            out.push(d);
        }
    }

    /// Every route's verdict on `ev`, in order, with reasons.
    pub fn explain(&self, ev: &Event) -> Vec<RouteVerdict> {
        let mut taken = Vec::new();
        self.evaluate(ev, &mut taken);
        let mut stopped_by: Option<&str> = None;
        let mut verdicts = Vec::new();
        for (i, r) in self.routes.iter().enumerate() {
            let mut reasons = Vec::new();
            if r.default {
                reasons.push(if taken == [i] {
                    "default route: no other route took the event".to_string()
                } else {
                    "default route: skipped, another route took the event".to_string()
                });
            } else if let Some(by) = stopped_by {
                reasons.push(format!("not evaluated: route `{by}` matched and does not continue"));
            } else {
                for ((m, v), field) in r.matchers.iter().zip(values(ev)).zip(FIELDS) {
                    if let Some(m) = m {
                        reasons.push(format!("{field} \"{v}\" {}", m.explain(v)));
                    }
                }
                if reasons.is_empty() {
                    reasons.push("no match conditions: matches every event".to_string());
                }
                if taken.contains(&i) && !r.continue_ {
                    stopped_by = Some(&r.name);
                }
            }
            verdicts.push(RouteVerdict {
                route: r.name.clone(),
                taken: taken.contains(&i),
                reasons,
            });
        }
        verdicts
    }
}
