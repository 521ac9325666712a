//! Enricher: adds `labels.team` (from the event's namespace) unless the event
//! already has one, and `extra.severity` (from its type and reason), deciding
//! from the fields alone. See README.md for the table.

use std::collections::{BTreeMap, BTreeSet};

use event_collector_guest::prelude::*;
use serde::Deserialize;

/// Warning reasons that mean "something is broken now" unless the config says otherwise.
const DEFAULT_HIGH_REASONS: &[&str] = &[
    "BackOff",
    "FailedMount",
    "FailedAttachVolume",
    "FailedScheduling",
    "FailedCreatePodSandBox",
    "OOMKilling",
    "SystemOOM",
    "Evicted",
    "NodeNotReady",
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// namespace -> team
    #[serde(default)]
    teams: BTreeMap<String, String>,
    /// The team of a namespace not in `teams`; without it such events get no team label.
    #[serde(default)]
    default_team: Option<String>,
    /// Replaces the built-in list of Warning reasons that are "high".
    #[serde(default)]
    high_reasons: Option<BTreeSet<String>>,
}

struct EnrichTeam {
    teams: BTreeMap<String, String>,
    default_team: Option<String>,
    high_reasons: BTreeSet<String>,
}

impl EnrichTeam {
    fn severity(&self, event_type: &str, reason: &str) -> &'static str {
        match event_type {
            "Warning" if self.high_reasons.contains(reason) => "high",
            "Warning" => "medium",
            "Normal" => "low",
            _ => "unknown",
        }
    }
}

impl Filter for EnrichTeam {
    fn init(config: &str) -> Result<Self, String> {
        let c: Config = config::parse(config)?;
        let high_reasons = c
            .high_reasons
            .unwrap_or_else(|| DEFAULT_HIGH_REASONS.iter().map(|s| s.to_string()).collect());
        log::debug!("{} namespace(s) mapped to teams", c.teams.len());
        Ok(EnrichTeam {
            teams: c.teams,
            default_team: c.default_team,
            high_reasons,
        })
    }

    fn process(&mut self, fields: &EventFields, _event: &EventJson) -> Result<Verdict, String> {
        // An edit verdict: the event is neither read, parsed nor sent back
        // whole; the host applies the changes itself.
        let mut edits = Edits::new();
        // A team label the event already carries wins: `set-label-if-absent`
        // leaves that check to the host, so the event's JSON is never asked for.
        if let Some(team) = self.teams.get(&fields.namespace).or(self.default_team.as_ref()) {
            edits = edits.label_if_absent("team", team.as_str());
        }
        Ok(edits
            .extra("severity", self.severity(&fields.event_type, &fields.reason))
            .into())
    }
}

export_filter!(EnrichTeam);
