//! The `event-collector` command line: parse arguments, call into the library.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use event_collector::app::{self, RunOptions};
use event_collector::config::{self, Config};
use event_collector::explain;
use event_collector::source::client::ClientOptions;

/// mimalloc rather than glibc malloc: events cross threads (allocated where they are
/// decoded, freed after export), which glibc's arenas handle with locks (docs/benchmarks.md).
/// Built without transparent huge pages (`no_thp`: they doubled the RSS); its other
/// options are set first thing in `main` (event_collector::process_memory).
/// The `system-alloc` feature keeps glibc malloc, for heap profilers that
/// hook it (`heaptrack`, `valgrind --tool=dhat`; docs/benchmarks.md).
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "event-collector",
    version,
    about = "Keeps Kubernetes Events: watch, normalize, filter, route, export"
)]
struct Cli {
    /// Config file (default: event-collector.toml here, else beside the binary).
    #[arg(long, short, global = true, env = "EVENT_COLLECTOR_CONFIG")]
    config: Option<PathBuf>,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(clap::Args, Debug, Clone)]
struct RunArgs {
    /// Kubeconfig file (default: KUBECONFIG, ~/.kube/config, then the in-cluster service account).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Kubeconfig context (default: the current context).
    #[arg(long)]
    context: Option<String>,
    /// How long to wait for the API server at startup.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    connect_timeout: Duration,
    /// How long shutdown waits for exporters to drain.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    drain_timeout: Duration,
    /// Replay a recorded watch stream (JSON lines of {"type","object"}, as
    /// `generate --output` writes) instead of watching a cluster; exit at its
    /// end, after draining, with a summary line.
    #[arg(long)]
    replay: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the collector (the default).
    Run(RunArgs),
    /// Validate a config file; exit 0 if good, 1 with errors (file:line:col) if not.
    CheckConfig {
        /// The file (default: as --config).
        file: Option<PathBuf>,
    },
    /// Create Kubernetes Events in a cluster (as a real kubelet, scheduler or
    /// controller would), or write them without a cluster as a recorded watch
    /// stream (--output). Without --scenario or --type/--reason/--message: the
    /// `mixed` scenario.
    Generate(GenerateArgs),
    /// Routing table tools.
    Route {
        #[command(subcommand)]
        command: RouteCommand,
    },
    /// WASM filter tools (with --config: the filter's config as JSON or TOML,
    /// or a collector config whose [[filters]] entry for the module is used).
    Filter {
        #[command(subcommand)]
        command: FilterCommand,
    },
}

#[derive(clap::Args, Debug, Clone)]
struct GenerateArgs {
    /// Which Event API to create through; --count is per API.
    #[arg(long, value_enum, default_value_t = GenApiArg::Both)]
    api: GenApiArg,
    /// Namespace of the events (it must exist).
    #[arg(long, short, default_value = "default")]
    namespace: String,
    /// A preset sequence, with the reasons, messages and components real clusters emit.
    #[arg(long, value_enum)]
    scenario: Option<ScenarioArg>,
    /// Kind of the involved object (without --scenario).
    #[arg(long, default_value = "Pod")]
    kind: String,
    /// Name of the involved object (with --scenario: the workload's base name).
    #[arg(long)]
    name: Option<String>,
    /// Event type (without --scenario).
    #[arg(long = "type", value_enum)]
    type_: Option<TypeArg>,
    /// Event reason (without --scenario).
    #[arg(long)]
    reason: Option<String>,
    /// Event message (without --scenario).
    #[arg(long)]
    message: Option<String>,
    /// Events per second over all APIs (default: as fast as the API server takes them).
    #[arg(long)]
    rate: Option<f64>,
    /// Events per API (default: one pass of the scenario, or 1).
    #[arg(long)]
    count: Option<u64>,
    /// Write a recorded watch stream (JSON lines as the API server sends them) here instead of creating events.
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Kubeconfig file (default: KUBECONFIG, ~/.kube/config, then the in-cluster service account).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Kubeconfig context (default: the current context).
    #[arg(long)]
    context: Option<String>,
    /// How long to wait for the API server.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    connect_timeout: Duration,
}

#[derive(ValueEnum, Debug, Clone, Copy)]
enum GenApiArg {
    #[value(name = "core/v1")]
    CoreV1,
    #[value(name = "events.k8s.io/v1")]
    EventsV1,
    Both,
}

#[derive(ValueEnum, Debug, Clone, Copy)]
enum ScenarioArg {
    ImagePullFailure,
    CrashLoop,
    FailedScheduling,
    FailedMount,
    NormalRollout,
    /// Every scenario in turn.
    Mixed,
}

#[derive(ValueEnum, Debug, Clone, Copy)]
enum TypeArg {
    #[value(name = "Normal", alias = "normal")]
    Normal,
    #[value(name = "Warning", alias = "warning")]
    Warning,
}

#[derive(Subcommand, Debug)]
enum FilterCommand {
    /// Run events through a module: each verdict, the fields a replacement
    /// changed, then the median and p99 time per call.
    Test {
        /// The module (.wasm: a component or a core module).
        #[arg(long)]
        module: PathBuf,
        /// JSON Lines: events (normalized, or as the API server serves them) or
        /// test vectors ({"input": ..., "expect": ...}).
        #[arg(long)]
        input: PathBuf,
        /// Run the input this many times (only the first pass is printed), for steadier timings.
        #[arg(long, default_value_t = 1)]
        repeat: usize,
        /// Per-call timeout instead of the config's (e.g. "200ms").
        #[arg(long, value_parser = parse_duration)]
        timeout: Option<Duration>,
    },
    /// Show a module's contract version, exports and imports, and the WASI
    /// imports the config does not grant.
    Check {
        /// The module (.wasm).
        module: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum RouteCommand {
    /// Show which routes and exporters an event would take, and why.
    Explain {
        /// An Event as JSON: core/v1 or events.k8s.io/v1 as the API server serves it, or the normalized form.
        #[arg(long)]
        event: PathBuf,
    },
}

#[derive(ValueEnum, Debug, Clone, Copy)]
enum LogFormat {
    Text,
    Json,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    event_collector_exporters::units::parse_duration(s)
}

/// Logging: RUST_LOG wins when set, else the config's `[log] level`, else info.
fn init_logging(format: LogFormat, config_path: &std::path::Path) {
    let rust_log = std::env::var("RUST_LOG").ok();
    let configured = config::ops::peek_log_level(config_path);
    let level = config::ops::effective_log_level(rust_log.as_deref(), configured.as_deref());
    let filter =
        tracing_subscriber::EnvFilter::try_new(&level).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    event_collector::process_memory::tune();
    let cli = Cli::parse();
    let config_path = cli.config.clone().unwrap_or_else(config::default_path);
    init_logging(cli.log_format, &config_path);
    let result = match cli.command {
        Some(Command::CheckConfig { file }) => {
            let path = file.unwrap_or(config_path);
            app::check_config(&path).map(|c| {
                println!(
                    "{}: OK ({} exporters, {} routes)",
                    path.display(),
                    c.exporters.len(),
                    c.routes.len()
                );
            })
        }
        Some(Command::Route {
            command: RouteCommand::Explain { event },
        }) => route_explain(&config_path, &event),
        Some(Command::Filter { command }) => filter_command(command, cli.config.as_deref()),
        Some(Command::Generate(args)) => generate(args),
        Some(Command::Run(args)) => run(config_path, args),
        None => run(config_path, cli.run),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn route_explain(config_path: &std::path::Path, event: &std::path::Path) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
    let text = std::fs::read_to_string(event).map_err(|e| anyhow::anyhow!("{}: {e}", event.display()))?;
    let cluster = config.cluster.clone().unwrap_or_else(|| "default".into());
    let ev = explain::parse_event(&text, &event.display().to_string(), &cluster)?;
    print!("{}", explain::explain(&config, &ev));
    Ok(())
}

fn filter_command(command: FilterCommand, config: Option<&std::path::Path>) -> anyhow::Result<()> {
    use event_collector::filter::tools;
    let mut out = std::io::stdout().lock();
    match command {
        FilterCommand::Test {
            module,
            input,
            repeat,
            timeout,
        } => tools::filter_test(
            &tools::TestOptions {
                module,
                config: config.map(std::path::Path::to_path_buf),
                input,
                repeat,
                cluster: "default".into(),
                timeout,
            },
            &mut out,
        )
        .map(|_| ()),
        FilterCommand::Check { module } => tools::filter_check(&module, config, &mut out),
    }
}

fn run(config: PathBuf, args: RunArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(app::run(RunOptions {
        config,
        client: ClientOptions {
            kubeconfig: args.kubeconfig,
            context: args.context,
        },
        connect_timeout: args.connect_timeout,
        drain_timeout: args.drain_timeout,
        replay: args.replay,
    }))
}

fn generate(args: GenerateArgs) -> anyhow::Result<()> {
    use event_collector::generate::{self as gen_, GenApi, GenOptions, Scenario};
    let single = args.type_.is_some() || args.reason.is_some() || args.message.is_some();
    let scenario = match args.scenario {
        Some(ScenarioArg::ImagePullFailure) => Some(Scenario::ImagePullFailure),
        Some(ScenarioArg::CrashLoop) => Some(Scenario::CrashLoop),
        Some(ScenarioArg::FailedScheduling) => Some(Scenario::FailedScheduling),
        Some(ScenarioArg::FailedMount) => Some(Scenario::FailedMount),
        Some(ScenarioArg::NormalRollout) => Some(Scenario::NormalRollout),
        Some(ScenarioArg::Mixed) => Some(Scenario::Mixed),
        None if single => None,
        None => Some(Scenario::Mixed),
    };
    let defaults = GenOptions::default();
    let opts = GenOptions {
        api: match args.api {
            GenApiArg::CoreV1 => GenApi::CoreV1,
            GenApiArg::EventsV1 => GenApi::EventsV1,
            GenApiArg::Both => GenApi::Both,
        },
        namespace: args.namespace,
        kind: args.kind,
        name: args.name,
        type_: match args.type_ {
            Some(TypeArg::Warning) => "Warning".into(),
            Some(TypeArg::Normal) | None => "Normal".into(),
        },
        reason: args.reason.unwrap_or(defaults.reason),
        message: args.message.unwrap_or(defaults.message),
        rate: args.rate,
        count: args.count,
        scenario,
    };
    if let Some(r) = opts.rate
        && !(r > 0.0 && r.is_finite())
    {
        anyhow::bail!("--rate must be a positive number of events per second, got {r}");
    }
    let what = scenario.map_or("events", Scenario::name);
    if let Some(path) = &args.output {
        let done = gen_::to_file(path, &opts)?;
        println!(
            "{}: wrote {} core/v1 and {} events.k8s.io/v1 {what} as a watch stream",
            path.display(),
            done.core,
            done.v1
        );
    } else {
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        let client_opts = ClientOptions {
            kubeconfig: args.kubeconfig,
            context: args.context,
        };
        let done = runtime.block_on(async {
            let client = event_collector::source::client::connect(&client_opts, args.connect_timeout).await?;
            anyhow::Ok(gen_::to_cluster(client, &opts).await?)
        })?;
        println!(
            "created {} core/v1 and {} events.k8s.io/v1 {what} in namespace {}",
            done.core, done.v1, opts.namespace
        );
    }
    Ok(())
}
