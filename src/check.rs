//! `switchyard check`: build the scripts exactly as `run` does (against the catalog file and the
//! live providers) and print the route table, or the errors with file:line:col; and
//! `switchyard catalog`: print what the providers see, in the catalog file's format. Prints to stdout/stderr (this is CLI code) and never starts a server.

use crate::config::Config;
use crate::routing::TableInfo;
use crate::script::ScriptsOrigin;
use crate::script::{self, error::render_all, Limits, ScriptError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum Format {
    #[default]
    Text,
    Json,
}

/// Returns the process exit code: 0 when the scripts build, 1 otherwise.
pub fn check(cfg: &Config, format: Format) -> i32 {
    let result = load_and_build(cfg).map_err(|errs| {
        if format == Format::Json {
            serde_json::json!({ "ok": false, "errors": errs }).to_string()
        } else {
            render_all(&errs)
        }
    });
    match result {
        Ok(built) => {
            // Warnings (e.g. a container skipped for a malformed label) go to stderr in both
            // formats, so JSON on stdout stays the route table.
            for w in &built.warnings {
                eprintln!("warning: {w}");
            }
            let info = TableInfo::of(&built.table);
            match format {
                Format::Text => print!("{}", info.to_text()),
                Format::Json => match serde_json::to_string_pretty(&info) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        eprintln!("cannot encode the route table: {e}");
                        return 1;
                    }
                },
            }
            0
        }
        Err(msg) => {
            if format == Format::Json {
                println!("{msg}");
            } else {
                eprintln!("{msg}");
            }
            1
        }
    }
}

/// Loads the catalog and scripts and builds them; every failure is a `ScriptError` so both
/// output formats report it the same way.
fn load_and_build(cfg: &Config) -> Result<script::Built, Vec<ScriptError>> {
    let catalog =
        crate::providers::snapshot_now(cfg).map_err(|e| vec![ScriptError::catalog(&e)])?;
    for p in &catalog.problems {
        eprintln!("warning: {p}");
    }
    let sources = match &cfg.scripts {
        ScriptsOrigin::Dir(d) => script::load_dir(d).map_err(|e| vec![e])?,
        ScriptsOrigin::Embedded => script::embedded_default(),
    };
    let env = script::BuildEnv::new(cfg.entrypoint_names(), cfg.admin);
    script::build_with(&sources, &catalog, &env, &Limits::default(), None)
}

/// `switchyard catalog`: what the providers see now, as the JSON array `--catalog` reads.
pub fn print_catalog(cfg: &Config) -> i32 {
    match crate::providers::snapshot_now(cfg) {
        Ok(catalog) => {
            for p in &catalog.problems {
                eprintln!("warning: {p}");
            }
            match serde_json::to_string_pretty(&catalog.entries) {
                Ok(s) => {
                    println!("{s}");
                    0
                }
                Err(e) => {
                    eprintln!("cannot encode the catalog: {e}");
                    1
                }
            }
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}
