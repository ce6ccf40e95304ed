//! The Traefik drop-in mode (`switchyard traefik [TRAEFIK FLAGS…]`, also chosen when the first
//! argument is a Traefik flag, so an image swap keeps the stack file's `command:`): Traefik's
//! static configuration — its command line, `traefik.yml`/`traefik.toml` or `TRAEFIK_*`
//! variables, v1.7 to v3 — becomes a `switchyard run` command line plus a generated route
//! script that reads Traefik labels with the same defaults.
//!
//! Owns reading (`source`) and translating (`translate`) that configuration, and the
//! `--dry-run` text that shows users the switchyard equivalent to migrate to. Invariants: the
//! translation is pure (no I/O beyond reading the configuration file); a configuration with a
//! refused key never starts; every ignored key is reported with its reason.

pub mod source;
pub mod translate;

pub use source::Settings;
pub use translate::Translation;

/// The generated script's name, as errors and `/api/scripts` show it.
pub const SCRIPT_NAME: &str = "traefik/10-traefik.rhai";

/// First-level keys of Traefik's static configuration (v1.7 to v3), lower case: an argument
/// `--KEY…` with one of these roots is a Traefik flag.
const ROOTS: &[&str] = &[
    "accesslog",
    "accesslogsfile",
    "acme",
    "api",
    "certificatesresolvers",
    "checknewversion",
    "configfile",
    "core",
    "debug",
    "defaultentrypoints",
    "docker",
    "entrypoints",
    "experimental",
    "global",
    "hostresolver",
    "log",
    "loglevel",
    "metrics",
    "pilot",
    "ping",
    "providers",
    "sendanonymoususage",
    "serverstransport",
    "tcpserverstransport",
    "tracing",
    "traefiklogsfile",
    "web",
];

/// Whether `arg` is a Traefik flag (and not one of switchyard's own: `--help`, `--version`).
pub fn is_traefik_flag(arg: &str) -> bool {
    let Some(flag) = arg.strip_prefix("--") else {
        return false;
    };
    let root = flag
        .split(['.', '='])
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    ROOTS.contains(&root.as_str())
}

/// Reads and translates Traefik's static configuration.
pub fn plan(
    args: &[String],
    env: &[(String, String)],
) -> Result<(Settings, Translation), Vec<String>> {
    let settings = source::load(args, env).map_err(|e| vec![e])?;
    let t = translate::translate(&settings.pairs)?;
    Ok((settings, t))
}

/// Quotes an argument for a POSIX shell when it needs it.
fn shell_word(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=,@%+".contains(&b));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// What `switchyard traefik --dry-run` prints: the equivalent command line, the script to save
/// beside it, and the keys ignored.
pub fn dry_run(settings: &Settings, t: &Translation) -> String {
    let mut out = format!(
        "# Traefik static configuration read from: {}\n\
         # The same router as a switchyard command line; save the script below as\n\
         # scripts/10-traefik.rhai first.\n",
        settings.from
    );
    let mut line = String::from("switchyard run --scripts scripts");
    for a in &t.args {
        line.push_str(" \\\n    ");
        line.push_str(&shell_word(a));
    }
    out.push_str(&line);
    out.push_str("\n\n# scripts/10-traefik.rhai\n");
    out.push_str(&t.script);
    if !t.ignored.is_empty() {
        out.push_str("\n# Accepted without effect:\n");
        for i in &t.ignored {
            out.push_str(&format!("#   --{i}\n"));
        }
    }
    out
}

/// `switchyard run` with the translated flags, as a parser of its own.
#[derive(clap::Parser)]
#[command(name = "switchyard run")]
struct RunLine {
    #[command(flatten)]
    run: crate::config::RunArgs,
}

/// The router configuration a translation describes: its flags parsed as `switchyard run`
/// parses them (so `SWITCHYARD_*` variables still apply), the generated script as the only
/// script.
pub fn config(t: &Translation) -> anyhow::Result<crate::config::Config> {
    use anyhow::Context as _;
    use clap::Parser as _;
    let mut argv: Vec<std::ffi::OsString> = vec!["switchyard run".into()];
    argv.extend(t.args.iter().map(Into::into));
    let line = RunLine::try_parse_from(crate::config::expand_entrypoint_flags(argv))
        .context("the switchyard command line made from Traefik's configuration")?;
    let mut cfg = crate::config::resolve(&line.run.common, Some(&line.run))?;
    cfg.scripts =
        crate::script::ScriptsOrigin::Generated(vec![(SCRIPT_NAME.to_string(), t.script.clone())]);
    Ok(cfg)
}
