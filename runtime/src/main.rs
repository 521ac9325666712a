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
        FilterCommand::Test { module, input, repeat } => tools::filter_test(
            &tools::TestOptions {
                module,
                config: config.map(std::path::Path::to_path_buf),
                input,
                repeat,
                cluster: "default".into(),
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
    }))
}
