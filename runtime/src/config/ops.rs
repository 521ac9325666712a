//! The operations sections of the config: `[http]` (the metrics and health
//! endpoint), `[metrics]` (the per-event `kubernetes_events` counter) and
//! `[log]` (the log level), with their defaults and validation.

use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::Problems;

/// The default HTTP address when running locally (in-cluster manifests use 0.0.0.0:9464).
pub const DEFAULT_HTTP_ADDRESS: &str = "127.0.0.1:9464";

/// `[http]`: one address serving /metrics, /healthz and /readyz.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub enabled: bool,
    address: Spanned<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            address: Spanned::new(0..0, DEFAULT_HTTP_ADDRESS.to_string()),
        }
    }
}

impl HttpConfig {
    /// The listen address (validated when the config was loaded).
    pub fn address(&self) -> SocketAddr {
        self.address
            .get_ref()
            .parse()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 9464)))
    }

    /// A config listening on `address`; for tests and tools.
    pub fn with_address(address: SocketAddr) -> Self {
        Self {
            enabled: true,
            address: Spanned::new(0..0, address.to_string()),
        }
    }

    fn validate(&self, problems: &mut Problems<'_>) {
        if self.address.get_ref().parse::<SocketAddr>().is_err() {
            problems.at(
                self.address.span(),
                format!(
                    "[http]: `address` must be IP:PORT (e.g. \"0.0.0.0:9464\"), got `{}`",
                    self.address.get_ref()
                ),
            );
        }
    }
}

/// `[metrics]`: the `kubernetes_events_total{type,reason,kind,namespace}` counter.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Count routed events by type, reason and involved-object kind.
    pub kubernetes_events: bool,
    /// Add the event's namespace as a label (more series).
    pub namespace_label: bool,
    /// At most this many label combinations; later new ones fold into "other".
    pub max_series: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            kubernetes_events: true,
            namespace_label: false,
            max_series: 2000,
        }
    }
}

/// `[log]`: the level (a tracing `EnvFilter` directive; `RUST_LOG` wins when set).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    level: Spanned<String>,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: Spanned::new(0..0, "info".to_string()),
        }
    }
}

impl LogConfig {
    pub fn level(&self) -> &str {
        self.level.get_ref()
    }

    fn validate(&self, problems: &mut Problems<'_>) {
        if let Err(e) = check_level(self.level.get_ref()) {
            problems.at(self.level.span(), format!("[log]: `level`: {e}"));
        }
    }
}

/// Checks a log level: a level word (error, warn, info, debug, trace, off) or
/// comma-separated `target=level` directives.
pub fn check_level(level: &str) -> Result<(), String> {
    if level.trim().is_empty() {
        return Err("is empty: use error, warn, info, debug or trace".into());
    }
    const WORDS: [&str; 6] = ["error", "warn", "info", "debug", "trace", "off"];
    for directive in level.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let word = directive.rsplit_once('=').map_or(directive, |(_, w)| w).trim();
        if !WORDS.iter().any(|w| w.eq_ignore_ascii_case(word)) {
            return Err(format!(
                "`{level}` is not a level or a list of target=level directives: `{word}` is not one of {}",
                WORDS.join(", ")
            ));
        }
    }
    tracing_subscriber::EnvFilter::builder()
        .parse(level)
        .map(|_| ())
        .map_err(|e| format!("`{level}` is not a level or a list of target=level directives: {e}"))
}

/// Validates the three sections; `span` is the whole file's (for `[metrics]`, which has no spanned keys).
pub(crate) fn validate(
    http: &HttpConfig,
    metrics: &Spanned<MetricsConfig>,
    log: &LogConfig,
    problems: &mut Problems<'_>,
) {
    http.validate(problems);
    log.validate(problems);
    if metrics.get_ref().max_series == 0 {
        problems.at(metrics.span(), "[metrics]: `max_series` must be at least 1");
    }
}

/// The `[log] level` of a config file, read leniently before logging starts
/// (a broken file is reported, with its place, by the full load later).
pub fn peek_log_level(path: &Path) -> Option<String> {
    let src = std::fs::read_to_string(path).ok()?;
    let root = DeTable::parse(&src).ok()?;
    let log = root.get_ref().get("log")?;
    let DeValue::Table(t) = log.get_ref() else {
        return None;
    };
    let level = super::de_str(t.get("level")?)?;
    check_level(level).ok()?;
    Some(level.to_string())
}

/// The log filter to use: `RUST_LOG` when set (and valid), else the config's
/// `[log] level`, else "info".
pub fn effective_log_level(rust_log: Option<&str>, configured: Option<&str>) -> String {
    match rust_log {
        Some(env) if !env.trim().is_empty() && check_level(env).is_ok() => env.to_string(),
        _ => configured.unwrap_or("info").to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    fn errors(src: &str) -> Vec<String> {
        match Config::parse(src, Path::new("test.toml")) {
            Ok(_) => panic!("config should be rejected:\n{src}"),
            Err(e) => e.to_string().lines().map(str::to_string).collect(),
        }
    }

    #[test]
    fn defaults() {
        let c = Config::parse("", Path::new("t.toml")).expect("valid");
        assert!(c.http.enabled);
        assert_eq!(c.http.address().to_string(), DEFAULT_HTTP_ADDRESS);
        assert_eq!(c.metrics, MetricsConfig::default());
        assert!(c.metrics.kubernetes_events && !c.metrics.namespace_label);
        assert_eq!(c.metrics.max_series, 2000);
        assert_eq!(c.log.level(), "info");
    }

    #[test]
    fn sections_load() {
        let src = "[http]\nenabled = false\naddress = \"0.0.0.0:9500\"\n\n[metrics]\nnamespace_label = true\nmax_series = 10\n\n[log]\nlevel = \"event_collector=debug,warn\"\n";
        let c = Config::parse(src, Path::new("t.toml")).expect("valid");
        assert!(!c.http.enabled);
        assert_eq!(c.http.address().to_string(), "0.0.0.0:9500");
        assert!(c.metrics.kubernetes_events && c.metrics.namespace_label);
        assert_eq!(c.metrics.max_series, 10);
        assert_eq!(c.log.level(), "event_collector=debug,warn");
    }

    #[test]
    fn bad_values_have_their_place() {
        let e = errors("[http]\naddress = \"localhost\"\n");
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with("test.toml:2:11: [http]: `address` must be IP:PORT"),
            "{e:?}"
        );

        let e = errors("\n[log]\nlevel = \"loud\"\n");
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with("test.toml:3:9: [log]: `level`: `loud` is not a level"),
            "{e:?}"
        );

        let e = errors("[log]\nlevel = \"\"\n");
        assert!(e[0].starts_with("test.toml:2:9: [log]: `level`: is empty"), "{e:?}");

        let e = errors("[metrics]\nmax_series = 0\n");
        assert!(
            e[0].starts_with("test.toml:1:1: [metrics]: `max_series` must be at least 1"),
            "{e:?}"
        );

        let e = errors("[metrics]\nnamespace_labels = true\n");
        assert!(
            e[0].starts_with("test.toml:2:1: unknown field `namespace_labels`"),
            "{e:?}"
        );

        let e = errors("[log]\nlevel = \"info\"\nformat = \"json\"\n");
        assert!(e[0].starts_with("test.toml:3:1: unknown field `format`"), "{e:?}");
    }

    #[test]
    fn log_level_words_and_directives() {
        for ok in [
            "error",
            "warn",
            "info",
            "debug",
            "trace",
            "off",
            "INFO",
            "event_collector=debug,info",
        ] {
            assert!(check_level(ok).is_ok(), "{ok}");
        }
        for bad in ["", " ", "loud", "event_collector=loud"] {
            assert!(check_level(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rust_log_wins_over_the_config() {
        assert_eq!(effective_log_level(None, None), "info");
        assert_eq!(effective_log_level(None, Some("debug")), "debug");
        assert_eq!(effective_log_level(Some("trace"), Some("debug")), "trace");
        // Unset-like or invalid RUST_LOG does not override the config.
        assert_eq!(effective_log_level(Some(""), Some("debug")), "debug");
        assert_eq!(effective_log_level(Some("bogus=level=x"), Some("warn")), "warn");
    }

    #[test]
    fn peek_reads_the_level_before_logging_starts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[log]\nlevel = \"debug\"\n[source]\nbogus = 1\n").expect("write");
        // The rest of the file may be broken: the full load reports that.
        assert_eq!(peek_log_level(&path).as_deref(), Some("debug"));
        std::fs::write(&path, "[log]\nlevel = \"loud\"\n").expect("write");
        assert_eq!(peek_log_level(&path), None);
        assert_eq!(peek_log_level(&dir.path().join("missing.toml")), None);
    }
}
