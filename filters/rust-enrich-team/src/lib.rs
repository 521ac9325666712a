//! Enricher: adds `labels.team` (from the event's namespace) and
//! `extra.severity` (from its type and reason). See README.md for the table.

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
    /// A team label the event already carries wins (the default). False:
    /// always set it, so the filter never asks the host for the event JSON.
    #[serde(default = "yes")]
    keep_existing_team: bool,
}

fn yes() -> bool {
    true
}

struct EnrichTeam {
    teams: BTreeMap<String, String>,
    default_team: Option<String>,
    high_reasons: BTreeSet<String>,
    keep_existing_team: bool,
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
            keep_existing_team: c.keep_existing_team,
        })
    }

    fn process(&mut self, fields: &EventFields, event: &EventJson) -> Result<Verdict, String> {
        // An edit verdict: the event is neither parsed into an `Event` nor
        // sent back whole; the host applies the two changes itself.
        let mut edits = Edits::new();
        let team = self.teams.get(&fields.namespace).or(self.default_team.as_ref());
        // A team label the event already carries wins: only then is the
        // event's JSON asked for (once there is a team to set), and only its
        // `labels` read, when its text contains "team".
        if let Some(team) = team
            && (!self.keep_existing_team || event.label("team")?.is_none())
        {
            edits = edits.label("team", team.as_str());
        }
        Ok(edits
            .extra("severity", self.severity(&fields.event_type, &fields.reason))
            .into())
    }
}

export_filter!(EnrichTeam);
