//! The `switchyard` command line: `run`, `check`, `catalog`, `replay`, `repl`, `test`, `whoami`,
//! and the generated `completions`, `man` and `definitions` (for editors).

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use switchyard::config::{self, CommonArgs, LogFormat, RunArgs};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "switchyard",
    version,
    about = "A programmable edge router: routing configuration is Rhai code"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the router: serve the entrypoints, hot-reload the scripts folder.
    Run(Box<RunArgs>),
    /// Run Traefik's own static configuration as switchyard: its flags (v1.7 to v3), else
    /// traefik.yml/traefik.toml (--configfile or Traefik's default places), else TRAEFIK_*
    /// variables. Also chosen when the first argument is a Traefik flag, so swapping the image
    /// keeps a stack file's `command:`. See docs/traefik.md.
    Traefik {
        /// Print the equivalent `switchyard run` command line and route script, then exit.
        #[arg(long)]
        dry_run: bool,
        /// Traefik's flags, as Traefik takes them (`--entrypoints.web.address=:80`,
        /// `--providers.docker.exposedbydefault=false`, `--docker.swarmMode`, ...).
        #[arg(
            value_name = "TRAEFIK_FLAGS",
            trailing_var_arg = true,
            allow_hyphen_values = true
        )]
        flags: Vec<String>,
    },
    /// Build the scripts as `run` would and print the route table; exit 1 on errors.
    Check {
        #[command(flatten)]
        common: CommonArgs,
        /// Output format: `text` for people, `json` (the route table as `/api/routes` shows it)
        /// for tools.
        #[arg(long, value_enum, value_name = "FORMAT", default_value = "text")]
        format: switchyard::check::Format,
        /// Exit 1 on warnings too (no scripts in the folder, scripts reading an empty catalog,
        /// containers or services skipped for their labels): for CI.
        #[arg(long)]
        strict: bool,
    },
    /// Print the live catalog (the catalog file plus what --docker/--swarm find) as the JSON that
    /// --catalog reads: snapshot production, then test scripts offline.
    Catalog {
        #[command(flatten)]
        common: CommonArgs,
        /// Translate containers from `docker inspect` output (a JSON file) instead of asking an
        /// engine: what switchyard makes of them, with the --docker.* settings given.
        #[arg(long, value_name = "FILE")]
        from_inspect: Option<std::path::PathBuf>,
    },
    /// Decide recorded requests with the scripts, offline: route, middlewares, the request as it
    /// would leave, or the router's answer. With --compare, only the requests a candidate
    /// scripts folder would treat differently, and exit 2 when there is any (0: none).
    Replay {
        #[command(flatten)]
        common: CommonArgs,
        /// The recording: JSON lines from `run --record`, or a HAR export.
        #[arg(long, value_name = "FILE")]
        requests: std::path::PathBuf,
        /// A candidate scripts folder to compare with --scripts.
        #[arg(long, value_name = "DIR")]
        compare: Option<std::path::PathBuf>,
        /// Print every route considered (the explain trace) for every request.
        #[arg(long)]
        explain: bool,
        /// With --compare, also count a different server of the same service as a change
        /// (by default balancer picks are ignored: round robin shifts whenever traffic moves).
        #[arg(long)]
        compare_servers: bool,
        /// Output format: `text` for people, `json` (one object per decision) for tools.
        #[arg(long, value_enum, value_name = "FORMAT", default_value = "text")]
        format: switchyard::check::Format,
    },
    /// Run the `*.test.rhai` files of DIR (and DIR/tests/) against the scripts, offline; exit 1
    /// on any failure, on scripts that do not build, or when DIR has no test files.
    Test {
        /// Folder of test files [default: the scripts folder]. When DIR holds route scripts
        /// (`*.rhai`) and no --scripts is given, those are the scripts tested.
        #[arg(value_name = "DIR")]
        dir: Option<std::path::PathBuf>,
        #[command(flatten)]
        common: CommonArgs,
        /// Output format: `text` (cargo-test style) or `json` (one object per test) for CI.
        #[arg(long, value_enum, value_name = "FORMAT", default_value = "text")]
        format: switchyard::check::Format,
    },
    /// Explore why requests route where they do, interactively: recorded or typed-in requests,
    /// the explain trace, Rhai expressions on a request; rebuilds when the scripts change.
    Repl {
        #[command(flatten)]
        common: CommonArgs,
        /// A recording to explore: JSON lines from `run --record`, or a HAR export.
        #[arg(long, value_name = "FILE")]
        requests: Option<std::path::PathBuf>,
    },
    /// Work with certificate resolvers' storage.
    Certs {
        #[command(subcommand)]
        action: CertsAction,
    },
    /// Print shell completions for the whole CLI (`switchyard completions bash >
    /// /etc/bash_completion.d/switchyard`).
    Completions {
        /// The shell.
        #[arg(value_enum, value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) of the whole CLI (`switchyard man | man -l -`).
    Man,
    /// Print the JSON Schema of the --config TOML file or of a --catalog file, for editors
    /// (taplo's `#:schema`, a JSON file's `$schema`) and checks in CI.
    Schema {
        /// Which file: `config` or `catalog`.
        #[arg(value_enum, value_name = "FILE")]
        of: SchemaOf,
    },
    /// Write Rhai definition files (`*.d.rhai`) for the script API into DIR, for Rhai's language
    /// server and editor extensions (completion and checks of `route(...)`, middlewares, `req.*`).
    Definitions {
        /// The folder to write into (created when missing).
        #[arg(value_name = "DIR")]
        dir: std::path::PathBuf,
    },
    /// A built-in echo backend for demos and tests (like Traefik's whoami).
    Whoami {
        /// Address to listen on (env so Swarm replicas can use `910{{.Task.Slot}}`-style ports).
        #[arg(
            long,
            env = "SWITCHYARD_WHOAMI_LISTEN",
            default_value = "127.0.0.1:9001",
            value_name = "ADDR"
        )]
        listen: String,
        /// Name shown in answers [default: the host name].
        #[arg(long, env = "SWITCHYARD_WHOAMI_NAME")]
        name: Option<String>,
    },
}

/// The files `switchyard schema` describes.
#[derive(Clone, Copy, clap::ValueEnum)]
enum SchemaOf {
    Config,
    Catalog,
}

#[derive(Subcommand)]
enum CertsAction {
    /// Import the certificates of a Traefik acme.json into a resolver's storage file; the
    /// router serves them at once and renews them when due.
    Import {
        /// Traefik's acme.json.
        #[arg(value_name = "ACME_JSON")]
        file: std::path::PathBuf,
        /// The switchyard resolver to import into (its storage is acme-NAME.json unless
        /// --storage says otherwise).
        #[arg(long, value_name = "NAME")]
        resolver: String,
        /// The Traefik resolver to read from acme.json [default: the same name].
        #[arg(long, value_name = "NAME")]
        from: Option<String>,
        /// The resolver's storage file [default: acme-NAME.json].
        #[arg(long, value_name = "FILE")]
        storage: Option<std::path::PathBuf>,
    },
}

fn init_logging(level: &str, format: LogFormat) -> anyhow::Result<()> {
    let filter =
        EnvFilter::try_new(level).with_context(|| format!("invalid log level {level:?}"))?;
    // Colours only for a terminal: `docker logs` and log files get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

/// `switchyard traefik`: Traefik's static configuration translated, then printed or run.
/// Traefik's static configuration from `flags` (its command line), the environment and its
/// files, translated.
fn traefik_plan(
    flags: &[String],
) -> anyhow::Result<(
    switchyard::traefik::source::Settings,
    switchyard::traefik::Translation,
)> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    switchyard::traefik::plan(flags, &env).map_err(|errors| {
        anyhow::anyhow!(
            "Traefik configuration not accepted:\n  {}",
            errors.join("\n  ")
        )
    })
}

fn run_traefik(dry_run: bool, flags: Vec<String>) -> anyhow::Result<ExitCode> {
    let dry_run = dry_run || flags.iter().any(|f| f == "--dry-run");
    let flags: Vec<String> = flags.into_iter().filter(|f| f != "--dry-run").collect();
    let (settings, t) = traefik_plan(&flags)?;
    if dry_run {
        print!("{}", switchyard::traefik::dry_run(&settings, &t));
        return Ok(ExitCode::SUCCESS);
    }
    let cfg = switchyard::traefik::config(&t)?;
    init_logging(&cfg.log_level, cfg.log_format)?;
    tracing::info!(from = %settings.from, "running Traefik's static configuration");
    for i in &t.ignored {
        tracing::info!("Traefik option accepted without effect: --{i}");
    }
    // SIGHUP and saves of Traefik's configuration file read it (and the environment) again.
    let watch = Some(std::path::PathBuf::from(&settings.from)).filter(|p| p.is_file());
    let reload = switchyard::app::StaticReload {
        watch,
        read: Box::new(move || {
            let (_, t) = traefik_plan(&flags)?;
            switchyard::traefik::config(&t)
        }),
    };
    runtime()?.block_on(switchyard::app::run_reloading(cfg, Some(reload)))?;
    Ok(ExitCode::SUCCESS)
}

/// The main runtime: control loop, admin API, signals (proxy workers have their own).
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
}

fn main() -> ExitCode {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // A Traefik command line (`command: --api --docker` in a stack file) runs as Traefik's.
    let first = args.get(1).and_then(|a| a.to_str());
    if first.is_some_and(switchyard::traefik::is_traefik_flag) {
        args.insert(1, "traefik".into());
    }
    // `--entrypoint.NAME.KEY=VALUE` flags have names clap cannot know in advance (Traefik's
    // own flags are read as they come).
    let cli = if args.get(1).is_some_and(|a| a == "traefik") {
        Cli::parse_from(args)
    } else {
        Cli::parse_from(config::expand_entrypoint_flags(args))
    };
    match real_main(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run(args) => {
            let cfg = config::resolve(&args.common, Some(&args))?;
            init_logging(&cfg.log_level, cfg.log_format)?;
            // SIGHUP and saves of `--config` read the static configuration again.
            let reload = switchyard::app::StaticReload {
                watch: args.common.config.clone(),
                read: Box::new(move || config::resolve(&args.common, Some(&args))),
            };
            runtime()?.block_on(switchyard::app::run_reloading(cfg, Some(reload)))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Traefik { dry_run, flags } => run_traefik(dry_run, flags),
        Command::Check {
            common,
            format,
            strict,
        } => {
            let cfg = config::resolve(&common, None)?;
            let code = switchyard::check::check(&cfg, format, strict);
            Ok(if code == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Catalog {
            common,
            from_inspect,
        } => {
            let cfg = config::resolve(&common, None)?;
            init_logging("warn", cfg.log_format)?;
            Ok(
                if switchyard::check::print_catalog(&cfg, from_inspect.as_deref()) == 0 {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                },
            )
        }
        Command::Replay {
            common,
            requests,
            compare,
            explain,
            compare_servers,
            format,
        } => {
            let cfg = config::resolve(&common, None)?;
            init_logging("warn", cfg.log_format)?;
            let code = switchyard::replay::report::replay(
                &cfg,
                &requests,
                format,
                compare.as_deref(),
                explain,
                compare_servers,
            );
            Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
        }
        Command::Test {
            dir,
            common,
            format,
        } => {
            let cfg = config::resolve(&common, None)?;
            init_logging("warn", cfg.log_format)?;
            let scripts_given = common.scripts.is_some();
            let code = switchyard::replay::suite::run(&cfg, dir.as_deref(), scripts_given, format);
            Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
        }
        Command::Repl { common, requests } => {
            let cfg = config::resolve(&common, None)?;
            init_logging("warn", cfg.log_format)?;
            let code = switchyard::replay::repl::run(&cfg, requests.as_deref());
            Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
        }
        Command::Certs {
            action:
                CertsAction::Import {
                    file,
                    resolver,
                    from,
                    storage,
                },
        } => {
            let storage =
                storage.unwrap_or_else(|| switchyard::acme::ResolverConfig::new(&resolver).storage);
            let from = from.unwrap_or_else(|| resolver.clone());
            let done = switchyard::acme::import::import(&file, &from, &resolver, &storage)
                .map_err(anyhow::Error::msg)?;
            for (name, why) in &done.skipped {
                eprintln!("skipped {name}: {why}");
            }
            println!(
                "imported {} certificate{} into {} (resolver {resolver}): {}",
                done.names.len(),
                if done.names.len() == 1 { "" } else { "s" },
                storage.display(),
                done.names.join(", ")
            );
            Ok(if done.names.is_empty() && !done.skipped.is_empty() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "switchyard", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Schema { of } => {
            let schema = match of {
                SchemaOf::Config => switchyard::config::json_schema(),
                SchemaOf::Catalog => switchyard::catalog::Catalog::json_schema(),
            };
            println!("{}", serde_json::to_string_pretty(&schema)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Man => {
            use clap::CommandFactory;
            let man = clap_mangen::Man::new(Cli::command());
            let mut out = Vec::new();
            man.render(&mut out).context("rendering the man page")?;
            for sub in Cli::command().get_subcommands() {
                let name = format!("switchyard-{}", sub.get_name());
                clap_mangen::Man::new(sub.clone().name(name))
                    .render(&mut out)
                    .context("rendering the man page")?;
            }
            std::io::Write::write_all(&mut std::io::stdout(), &out)
                .context("writing the man page")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Definitions { dir } => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            let files = switchyard::script::definitions();
            for (name, text) in &files {
                let path = dir.join(name);
                std::fs::write(&path, text)
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            println!(
                "wrote {} definition files to {}",
                files.len(),
                dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Whoami { listen, name } => {
            init_logging("info", LogFormat::Text)?;
            let name =
                name.unwrap_or_else(|| gethostname::gethostname().to_string_lossy().into_owned());
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the runtime")?
                .block_on(async move {
                    let listener = tokio::net::TcpListener::bind(&listen)
                        .await
                        .with_context(|| format!("cannot listen on {listen}"))?;
                    tracing::info!(addr = %listener.local_addr()?, %name, "whoami listening");
                    let shutdown = async {
                        let _ = tokio::signal::ctrl_c().await;
                    };
                    switchyard::whoami::serve(listener, name, shutdown)
                        .await
                        .context("whoami")
                })?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
