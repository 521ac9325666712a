use std::path::Path;

use super::*;

fn parse(src: &str) -> Result<Config, ConfigError> {
    Config::parse(src, Path::new("test.toml"))
}

fn errors(src: &str) -> Vec<String> {
    match parse(src) {
        Ok(_) => panic!("config should be rejected:\n{src}"),
        Err(e) => e.to_string().lines().map(str::to_string).collect(),
    }
}

const GOOD: &str = r#"
cluster = "prod-eu"

[source]
api = "core/v1"
exclude_namespaces = ["kube-system"]
startup = "max_age"
startup_max_age = "15m"

[[exporters]]
name = "local"
type = "volume"
path = "/tmp/ec-test-events"
batch_max_events = 50

[[exporters]]
name = "debug"
type = "stdout"

[[routes]]
name = "warnings"
exporters = ["local", "debug"]
continue = true
[routes.match]
type = "Warning"
reason = ["glob:Failed*", "BackOff"]
kind = { regex = "Pod|Node", none_of = ["Node"] }

[[routes]]
name = "rest"
default = true
exporters = ["local"]
"#;

#[test]
fn good_config_loads_with_defaults() {
    let c = parse(GOOD).expect("valid");
    assert_eq!(c.cluster.as_deref(), Some("prod-eu"));
    assert_eq!(c.source.api, WatchApi::CoreV1);
    assert_eq!(c.source.startup, StartupPolicy::MaxAge);
    assert_eq!(c.source.startup_max_age, std::time::Duration::from_secs(900));
    assert_eq!(c.source.page_size, 500, "default");
    assert_eq!(c.exporters.len(), 2);
    assert_eq!(c.exporters[0].common.batch_max_events, 50);
    assert_eq!(
        c.exporters[1].common,
        ExporterCommon {
            overflow: Some(Overflow::Block),
            ..ExporterCommon::default()
        }
    );
    assert!(matches!(c.exporters[0].kind, ExporterKind::Volume(_)));
    assert_eq!(c.routes.len(), 2);
    assert!(c.routes[0].continue_);
    assert!(c.routes[1].default);
    let kind = c.routes[0].compiled[3].as_ref().expect("kind matcher compiled");
    assert!(kind.matches("Pod") && !kind.matches("Node") && !kind.matches("Service"));
}

#[test]
fn empty_config_is_valid() {
    let c = parse("").expect("valid");
    assert_eq!(c.source.api, WatchApi::EventsV1);
    assert!(c.exporters.is_empty() && c.routes.is_empty());
}

#[test]
fn syntax_error_has_position() {
    let e = errors("[source]\napi = \"core/v1\"\nnamespaces = [\"a\",\n");
    assert!(e[0].starts_with("test.toml:"), "{e:?}");
    let e = errors("cluster = \n");
    assert!(e[0].starts_with("test.toml:1:"), "{e:?}");
}

#[test]
fn unknown_key_at_its_line() {
    let e = errors("[source]\napi = \"core/v1\"\nnamespacez = [\"a\"]\n");
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("test.toml:3:1: unknown field `namespacez`"), "{e:?}");
}

#[test]
fn wrong_type_at_its_value() {
    let e = errors("[source]\npage_size = \"many\"\n");
    assert!(e[0].starts_with("test.toml:2:13:"), "{e:?}");
    assert!(e[0].contains("u32") || e[0].contains("integer"), "{e:?}");
    let e = errors("[source]\napi = \"v2\"\n");
    assert!(e[0].starts_with("test.toml:2:7:"), "{e:?}");
    assert!(
        e[0].contains("core/v1") && e[0].contains("events.k8s.io/v1"),
        "says what is expected: {e:?}"
    );
}

#[test]
fn exporter_errors_point_into_the_exporter_table() {
    let src = "[[exporters]]\nname = \"a\"\ntype = \"volume\"\npath = \"/tmp/x\"\nfsink = \"always\"\n";
    let e = errors(src);
    assert!(e[0].starts_with("test.toml:5:1:"), "{e:?}");
    assert!(e[0].contains("unknown field `fsink`"), "{e:?}");

    let e = errors("[[exporters]]\nname = \"a\"\ntype = \"volume\"\npath = \"/tmp/x\"\nbatch_timeout = \"soon\"\n");
    assert!(e[0].starts_with("test.toml:5:17:"), "{e:?}");
    assert!(e[0].contains("invalid duration"), "{e:?}");

    let e = errors("[[exporters]]\nname = \"a\"\ntype = \"carrier-pigeon\"\n");
    assert!(e[0].starts_with("test.toml:3:8:"), "{e:?}");
    assert!(e[0].contains("volume, stdout"), "{e:?}");

    let e = errors("[[exporters]]\ntype = \"stdout\"\n");
    assert!(e[0].contains("needs `name"), "{e:?}");

    let e = errors("[[exporters]]\nname = \"a\"\ntype = \"stdout\"\n[[exporters]]\nname = \"a\"\ntype = \"stdout\"\n");
    assert!(
        e[0].starts_with("test.toml:4:") && e[0].contains("defined twice"),
        "{e:?}"
    );
}

#[test]
fn queue_keys_default_by_type_and_are_checked_at_their_place() {
    let src = r#"
[[exporters]]
name = "es"
type = "elasticsearch"
url = "http://127.0.0.1:9200"

[[exporters]]
name = "files"
type = "volume"
path = "/tmp/x"
queue_max_bytes = "8MiB"
overflow = "drop_oldest"

[[exporters]]
name = "k"
type = "stdout"
overflow = "spill"
spill_dir = "/var/lib/event-collector/spill/k"
spill_max_bytes = "2GiB"
"#;
    let c = parse(src).expect("valid");
    let es = &c.exporters[0].common;
    assert_eq!(es.overflow(), Overflow::Spill, "spill is the default for elasticsearch");
    assert_eq!(es.queue_max_bytes, 8 << 20, "default");
    assert_eq!(es.spill_max_bytes, 1 << 30);
    assert_eq!(
        es.resolved_spill_dir("es", Path::new("/etc/ec"), Path::new("/var/lib/ec")),
        Path::new("/var/lib/ec/spill/es")
    );
    let files = &c.exporters[1].common;
    assert_eq!(files.overflow(), Overflow::DropOldest);
    assert_eq!(files.queue_max_bytes, 8 << 20);
    let k = &c.exporters[2].common;
    assert_eq!(
        k.resolved_spill_dir("k", Path::new("/etc/ec"), Path::new("/var/lib/ec")),
        Path::new("/var/lib/event-collector/spill/k")
    );
    assert_eq!(k.spill_max_bytes, 2 << 30);

    let vol = "[[exporters]]\nname = \"a\"\ntype = \"volume\"\npath = \"/tmp/x\"\n";
    let c = parse(vol).unwrap();
    assert_eq!(c.exporters[0].common.overflow(), Overflow::Block, "block for volume");

    let e = errors(&format!("{vol}overflow = \"later\"\n"));
    assert!(e[0].starts_with("test.toml:5:12:"), "{e:?}");
    assert!(e[0].contains("drop_newest"), "lists the choices: {e:?}");
    let e = errors(&format!("{vol}queue_max_bytes = \"0B\"\n"));
    assert!(e[0].starts_with("test.toml:5:19:"), "{e:?}");
    assert!(e[0].contains("`queue_max_bytes` must be greater than zero"), "{e:?}");
    let e = errors(&format!("{vol}queue_max_bytes = \"lots\"\n"));
    assert!(e[0].starts_with("test.toml:5:19:"), "{e:?}");
    let e = errors(&format!("{vol}spill_dir = \"/x\"\n"));
    assert!(e[0].starts_with("test.toml:5:13:"), "{e:?}");
    assert!(e[0].contains("only used with overflow = \"spill\""), "{e:?}");
}

#[test]
fn route_to_missing_exporter_is_rejected_at_the_name() {
    let src = "[[exporters]]\nname = \"local\"\ntype = \"stdout\"\n\n[[routes]]\nname = \"r\"\nexporters = [\"local\", \"kafka\"]\n";
    let e = errors(src);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("test.toml:7:23:"), "{e:?}");
    assert!(e[0].contains("`kafka`, which is not defined (defined: local)"), "{e:?}");
}

#[test]
fn bad_patterns_are_rejected_at_their_position() {
    let src = "[[routes]]\nname = \"r\"\n[routes.match]\nreason = \"regex:(Back\"\nkind = [\"Pod\", \"glob:[x\"]\nnamespace = { none_of = [\"regex:*\"] }\n";
    let e = errors(src);
    assert_eq!(e.len(), 3, "{e:?}");
    assert!(
        e[0].starts_with("test.toml:4:10:") && e[0].contains("invalid regex `(Back`"),
        "{e:?}"
    );
    assert!(
        e[1].starts_with("test.toml:5:16:") && e[1].contains("invalid glob `[x`"),
        "{e:?}"
    );
    assert!(
        e[2].starts_with("test.toml:6:26:") && e[2].contains("invalid regex `*`"),
        "{e:?}"
    );
}

#[test]
fn unknown_match_field_and_matcher_key() {
    let e = errors("[[routes]]\nname = \"r\"\n[routes.match]\nsevertiy = \"x\"\n");
    assert!(
        e[0].starts_with("test.toml:4:1:") && e[0].contains("unknown field `severtiy`"),
        "{e:?}"
    );
    let e = errors("[[routes]]\nname = \"r\"\n[routes.match]\nreason = { globb = \"x\" }\n");
    assert!(e[0].contains("unknown field `globb`"), "{e:?}");
}

#[test]
fn route_rules() {
    let e = errors("[[routes]]\nname = \"a\"\n[[routes]]\nname = \"a\"\n");
    assert!(
        e[0].starts_with("test.toml:4:8:") && e[0].contains("defined twice"),
        "{e:?}"
    );
    let e = errors("[[routes]]\nname = \"a\"\ndefault = true\n[[routes]]\nname = \"b\"\ndefault = true\n");
    assert!(e[0].contains("only one route"), "{e:?}");
    let e = errors("[[routes]]\nname = \"a\"\ndefault = true\n[routes.match]\ntype = \"Warning\"\n");
    assert!(e[0].contains("cannot have a `match`"), "{e:?}");
}

#[test]
fn source_cross_field_rules() {
    let e = errors("[source]\nnamespaces = [\"a\"]\nexclude_namespaces = [\"b\"]\n");
    assert!(
        e[0].starts_with("test.toml:1:1:") && e[0].contains("cannot both be set"),
        "{e:?}"
    );
    let e = errors("[source]\nnamespaces = [\"a,b\"]\n");
    assert!(e[0].contains("invalid namespace name `a,b`"), "{e:?}");
}

#[test]
fn several_problems_are_all_reported() {
    let src = "[[routes]]\nname = \"r\"\nexporters = [\"x\"]\n[routes.match]\nreason = \"regex:(\"\n";
    let e = errors(src);
    assert_eq!(e.len(), 2, "{e:?}");
}

#[test]
fn line_col_counts_characters() {
    assert_eq!(line_col("abc", 0), (1, 1));
    assert_eq!(line_col("a\nbc", 3), (2, 2));
    assert_eq!(line_col("é = 1\nx", 5), (1, 5), "after a 2-byte char");
    assert_eq!(line_col("é = 1\nx", 7), (2, 1));
    assert_eq!(line_col("ab", 99), (1, 3));
}
