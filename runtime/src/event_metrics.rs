//! The `kubernetes_events_total{type,reason,kind[,namespace]}` counter: routed
//! events by what they say, so users can alert on them from Prometheus.
//!
//! Owns the cardinality cap: at most `max_series` label combinations are
//! created; past the cap a new combination folds into one overflow series per
//! event type (`reason`, `kind` and `namespace` all "other"), with one warning.
//! Combinations created before the cap keep counting. The lookup reuses one
//! key buffer, so a known combination costs a hash lookup and no allocation.

use std::collections::HashMap;
use std::sync::Mutex;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::config::MetricsConfig;

pub type Labels = Vec<(&'static str, String)>;

/// The label value overflow series use.
pub const OTHER: &str = "other";

#[derive(Default)]
struct State {
    key: String,
    series: HashMap<String, Counter>,
    warned: bool,
}

pub struct KubeEventCounter {
    family: Family<Labels, Counter>,
    config: MetricsConfig,
    state: Mutex<State>,
}

impl KubeEventCounter {
    pub fn new(config: MetricsConfig) -> Self {
        Self {
            family: Family::default(),
            config,
            state: Mutex::new(State::default()),
        }
    }

    /// The family to register.
    pub fn family(&self) -> Family<Labels, Counter> {
        self.family.clone()
    }

    pub fn enabled(&self) -> bool {
        self.config.kubernetes_events
    }

    /// Counts one routed event.
    pub fn count(&self, type_: &str, reason: &str, kind: &str, namespace: &str) {
        if !self.config.kubernetes_events {
            return;
        }
        let namespace = if self.config.namespace_label { namespace } else { "" };
        let mut guard = match self.state.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let st = &mut *guard;
        st.key.clear();
        for part in [type_, reason, kind, namespace] {
            st.key.push_str(part);
            st.key.push('\u{0}');
        }
        if let Some(c) = st.series.get(st.key.as_str()) {
            c.inc();
            return;
        }
        if st.series.len() < self.config.max_series {
            let c = self
                .family
                .get_or_create(&self.labels(type_, reason, kind, namespace))
                .clone();
            c.inc();
            st.series.insert(st.key.clone(), c);
            return;
        }
        if !st.warned {
            st.warned = true;
            tracing::warn!(
                max_series = self.config.max_series,
                "kubernetes_events_total reached [metrics] max_series label combinations; new ones are counted under reason/kind/namespace=\"other\""
            );
        }
        let type_ = match type_ {
            "Normal" | "Warning" => type_,
            _ => OTHER,
        };
        self.family
            .get_or_create(&self.labels(type_, OTHER, OTHER, OTHER))
            .inc();
    }

    fn labels(&self, type_: &str, reason: &str, kind: &str, namespace: &str) -> Labels {
        let mut l = vec![
            ("type", type_.to_string()),
            ("reason", reason.to_string()),
            ("kind", kind.to_string()),
        ];
        if self.config.namespace_label {
            l.push(("namespace", namespace.to_string()));
        }
        l
    }

    /// The count of one series (labels as exposed; `namespace` ignored without the namespace label).
    pub fn get(&self, type_: &str, reason: &str, kind: &str, namespace: &str) -> u64 {
        self.family
            .get(&self.labels(type_, reason, kind, namespace))
            .map_or(0, |c| c.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter(namespace_label: bool, max_series: usize) -> KubeEventCounter {
        KubeEventCounter::new(MetricsConfig {
            kubernetes_events: true,
            namespace_label,
            max_series,
        })
    }

    fn exposition(c: &KubeEventCounter) -> String {
        let mut r = prometheus_client::registry::Registry::with_prefix("event_collector");
        r.register("kubernetes_events", "test", c.family());
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &r).expect("encode");
        out
    }

    #[test]
    fn counts_by_type_reason_kind_without_namespace_by_default() {
        let c = counter(false, 10);
        c.count("Warning", "BackOff", "Pod", "a");
        c.count("Warning", "BackOff", "Pod", "b");
        c.count("Normal", "Scheduled", "Pod", "a");
        assert_eq!(c.get("Warning", "BackOff", "Pod", ""), 2);
        assert_eq!(c.get("Normal", "Scheduled", "Pod", ""), 1);
        let text = exposition(&c);
        assert!(
            text.contains(r#"event_collector_kubernetes_events_total{type="Warning",reason="BackOff",kind="Pod"} 2"#),
            "{text}"
        );
        assert!(!text.contains("namespace="), "{text}");
    }

    #[test]
    fn namespace_label_when_asked() {
        let c = counter(true, 10);
        c.count("Warning", "BackOff", "Pod", "a");
        c.count("Warning", "BackOff", "Pod", "b");
        c.count("Warning", "BackOff", "Pod", "b");
        assert_eq!(c.get("Warning", "BackOff", "Pod", "a"), 1);
        assert_eq!(c.get("Warning", "BackOff", "Pod", "b"), 2);
        let text = exposition(&c);
        assert!(text.contains(r#"namespace="b"} 2"#), "{text}");
    }

    #[test]
    fn past_the_cap_new_combinations_fold_into_other() {
        let c = counter(true, 3);
        for ns in ["a", "b", "c"] {
            c.count("Warning", "BackOff", "Pod", ns);
        }
        // New combinations past the cap: folded per type.
        c.count("Warning", "BackOff", "Pod", "d");
        c.count("Warning", "Failed", "Node", "e");
        c.count("Normal", "Pulled", "Pod", "a");
        c.count("Weird", "X", "Pod", "a");
        // Existing combinations keep counting on their own series.
        c.count("Warning", "BackOff", "Pod", "a");
        assert_eq!(c.get("Warning", "BackOff", "Pod", "a"), 2);
        assert_eq!(c.get("Warning", OTHER, OTHER, OTHER), 2);
        assert_eq!(c.get("Normal", OTHER, OTHER, OTHER), 1);
        assert_eq!(c.get(OTHER, OTHER, OTHER, OTHER), 1);
        let text = exposition(&c);
        let series = text
            .lines()
            .filter(|l| l.starts_with("event_collector_kubernetes_events_total{"))
            .count();
        // 3 real series + at most one overflow series per type (Normal, Warning, other).
        assert_eq!(series, 6, "{text}");
        assert!(!text.contains(r#"namespace="d""#), "{text}");
    }

    #[test]
    fn many_distinct_combinations_stay_bounded() {
        let c = counter(true, 50);
        for i in 0..10_000 {
            c.count("Warning", &format!("Reason{i}"), "Pod", &format!("ns-{i}"));
        }
        let text = exposition(&c);
        let series = text
            .lines()
            .filter(|l| l.starts_with("event_collector_kubernetes_events_total{"))
            .count();
        assert_eq!(series, 51);
        assert_eq!(c.get("Warning", OTHER, OTHER, OTHER), 10_000 - 50);
    }

    #[test]
    fn disabled_counts_nothing() {
        let c = KubeEventCounter::new(MetricsConfig {
            kubernetes_events: false,
            ..MetricsConfig::default()
        });
        c.count("Warning", "BackOff", "Pod", "a");
        assert!(!exposition(&c).contains("kubernetes_events_total{"));
    }
}
