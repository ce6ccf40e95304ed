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

/// Returns the process exit code: 0 when the scripts build, 1 otherwise, and 1 as well with
/// `strict` when there was any warning (a folder without scripts, scripts reading an empty
/// catalog, a container or service skipped for its labels).
pub fn check(cfg: &Config, format: Format, strict: bool) -> i32 {
    let mut warnings = 0;
    let result = load_and_build(cfg, &mut warnings).map_err(|errs| {
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
                eprintln!("warning: {}", warning_text(w));
            }
            warnings += built.warnings.len();
            let info = TableInfo::of(&built.table);
            match format {
                Format::Text => print!("{}", info.to_text()),
                Format::Json => {
                    let mut v = match serde_json::to_value(&info) {
                        Ok(v) => v,
                        Err(e) => {
                            eprintln!("cannot encode the route table: {e}");
                            return 1;
                        }
                    };
                    if let Some(o) = v.as_object_mut() {
                        o.insert(
                            "warnings".into(),
                            built.warnings.iter().map(warning_json).collect(),
                        );
                    }
                    match serde_json::to_string_pretty(&v) {
                        Ok(s) => println!("{s}"),
                        Err(e) => {
                            eprintln!("cannot encode the route table: {e}");
                            return 1;
                        }
                    }
                }
            }
            if strict && warnings > 0 {
                eprintln!(
                    "error: {warnings} warning{} (--strict makes warnings fail)",
                    if warnings == 1 { "" } else { "s" }
                );
                return 1;
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

/// Whether a warning was raised by a shipped module (the label translation): its position is
/// the module's, not the user's, so it is not shown; the message names the container and label.
fn from_stdlib(w: &ScriptError) -> bool {
    w.file.starts_with("stdlib/")
}

/// A warning as `check` prints it.
fn warning_text(w: &ScriptError) -> String {
    if from_stdlib(w) {
        w.message.clone()
    } else {
        w.to_string()
    }
}

/// The text between `start` and the next `"` after it in `msg`.
fn quoted_after(msg: &str, start: &str) -> Option<String> {
    let rest = &msg[msg.find(start)? + start.len()..];
    Some(rest[..rest.find('"')?].to_string())
}

/// A warning for `check --format json`: the message, where it points (a user script's
/// file:line:col; none for the label translation), and what it is about — the container,
/// catalog entry, Swarm service or dynamic configuration file (`subject`) and the `label`.
fn warning_json(w: &ScriptError) -> serde_json::Value {
    let mut v = serde_json::Map::new();
    v.insert("message".into(), w.message.clone().into());
    if !from_stdlib(w) {
        v.insert("file".into(), w.file.clone().into());
        v.insert("line".into(), w.line.into());
        v.insert("column".into(), w.column.into());
    }
    let subject = [
        ("container \"", "container"),
        ("entry \"", "entry"),
        ("file \"", "file"),
    ]
    .iter()
    .find_map(|(start, kind)| quoted_after(&w.message, start).map(|n| (kind, n)))
    .or_else(|| {
        let rest = &w.message[w.message.find("swarm service ")? + "swarm service ".len()..];
        let name = rest.split([' ', ':']).next()?;
        Some((&"swarm service", name.to_string()))
    });
    if let Some((kind, name)) = subject {
        v.insert(
            "subject".into(),
            serde_json::json!({ "kind": kind, "name": name }),
        );
    }
    if let Some(at) = w.message.find("label ") {
        let label = w.message[at + 6..]
            .split([':', ' ', ';'])
            .next()
            .unwrap_or_default();
        if label.starts_with("traefik.") || label.starts_with("Traefik.") {
            v.insert("label".into(), label.into());
        }
    }
    serde_json::Value::Object(v)
}

/// Loads the catalog and scripts and builds them; every failure is a `ScriptError` so both
/// output formats report it the same way.
fn load_and_build(cfg: &Config, warnings: &mut usize) -> Result<script::Built, Vec<ScriptError>> {
    let catalog =
        crate::providers::snapshot_now(cfg).map_err(|e| vec![ScriptError::catalog(&e)])?;
    let mut warn = |w: String| {
        eprintln!("warning: {w}");
        *warnings += 1;
    };
    for p in &catalog.problems {
        warn(p.clone());
    }
    let sources = match &cfg.scripts {
        ScriptsOrigin::Dir(d) => script::load_dir(d).map_err(|e| vec![e])?,
        fixed => fixed.fixed_sources().unwrap_or_default(),
    };
    if let (ScriptsOrigin::Dir(d), true) = (&cfg.scripts, sources.is_empty()) {
        warn(format!(
            "no route scripts (*.rhai) in {}: the table is empty",
            d.display()
        ));
    }
    let no_catalog = cfg.catalog.is_none()
        && cfg.dynamic_config.is_none()
        && cfg.docker.is_none()
        && cfg.swarm.is_none();
    if let Some(src) = sources.iter().find(|s| reads_catalog(&s.text)) {
        if no_catalog {
            warn(format!(
                "{} reads `catalog`, but no --catalog, --docker or --swarm was given: it is empty here",
                src.name
            ));
        }
    }
    let env = cfg.build_env();
    let mut built = script::build_with(&sources, &catalog, &env, &Limits::default(), None)?;
    let problems = exercise_hooks(&built.table, &sources);
    built.warnings.extend(problems);
    Ok(built)
}

/// Runs every route's predicates and `on_request`/`on_response` hooks once against a made-up
/// request (`GET /` to the route's first host, from 192.0.2.1) in the sandbox, so a mistake in
/// a function body (`ctx.rout`, an unknown function) is a warning with its `file:line:col` now
/// rather than a 500 in production. The hooks' store is a throwaway one.
fn exercise_hooks(
    table: &crate::table::RouteTable,
    sources: &[script::ScriptSource],
) -> Vec<ScriptError> {
    use crate::middleware::{HookCtx, HookRequest, HookResponse, Middleware};
    let client: std::net::IpAddr = [192, 0, 2, 1].into();
    let store = std::sync::Arc::new(crate::middleware::store::Store::new());
    let mut out = Vec::new();
    for (seq, route) in table.routes().iter().enumerate() {
        let host = route
            .rule
            .required_hosts()
            .and_then(|hosts| {
                hosts.into_iter().find_map(|h| match h {
                    crate::routing::HostPattern::Exact(h) => Some(h),
                    crate::routing::HostPattern::Wildcard(_) => None,
                })
            })
            .unwrap_or_else(|| "example.test".to_string());
        let headers = http::HeaderMap::new();
        let view = crate::routing::RequestView {
            method: &http::Method::GET,
            host: &host,
            path: "/",
            query: None,
            headers: &headers,
            client_ip: client,
        };
        let mut problems: Vec<(String, String)> = Vec::new();
        if let Err(e) = route.rule.matches(&view) {
            problems.push(("its rule".to_string(), e));
        }
        let ctx = HookCtx {
            route: route.clone(),
            server: None,
            client_ip: client,
            request_seq: u64::try_from(seq).unwrap_or(0),
            store: store.clone(),
        };
        for m in &route.steps {
            let result = match m {
                Middleware::OnRequest(h) => {
                    let mut req = HookRequest {
                        method: http::Method::GET,
                        host: host.clone(),
                        path: "/".to_string(),
                        query: String::new(),
                        headers: headers.clone(),
                        client_ip: client,
                    };
                    h.on_request(&mut req, &ctx).map(|_| ())
                }
                Middleware::OnResponse(h) => {
                    let mut resp = HookResponse {
                        status: http::StatusCode::OK,
                        headers: http::HeaderMap::new(),
                    };
                    h.on_response(&mut resp, &ctx)
                }
                _ => Ok(()),
            };
            if let Err(e) = result {
                problems.push((m.describe(), e));
            }
        }
        for (what, e) in problems {
            out.push(located(
                &route.declared_at,
                &format!(
                    "route {} ({what}) fails on a made-up GET {host}/: ",
                    route.name
                ),
                &e,
                sources,
            ));
        }
    }
    out
}

/// A hook error (`… file:line:col: message`) as a `ScriptError` at that place with its source
/// line; at the route's declaration when the error names no place.
fn located(
    route_at: &crate::routing::Location,
    prefix: &str,
    error: &str,
    sources: &[script::ScriptSource],
) -> ScriptError {
    let place = error.split(": ").find_map(|part| {
        let mut it = part.rsplitn(3, ':');
        let col = it.next()?.parse::<usize>().ok()?;
        let line = it.next()?.parse::<usize>().ok()?;
        let file = it.next()?.rsplit(' ').next()?.to_string();
        file.ends_with(".rhai").then_some((file, line, col))
    });
    let e = match place {
        Some((file, line, column)) => {
            let message = error
                .split_once(&format!("{file}:{line}:{column}: "))
                .map_or(error, |(_, m)| m);
            ScriptError {
                file,
                line,
                column,
                message: format!("{prefix}{message}"),
                source_line: None,
            }
        }
        None => ScriptError::at(route_at, format!("{prefix}{error}")),
    };
    match sources.iter().find(|s| s.name == e.file) {
        Some(src) => e.with_source(&src.text),
        None => e,
    }
}

/// `switchyard catalog`: what the providers see now, as the JSON array `--catalog` reads.
pub fn print_catalog(cfg: &Config, from_inspect: Option<&std::path::Path>) -> i32 {
    let found = match from_inspect {
        None => crate::providers::snapshot_now(cfg),
        Some(file) => std::fs::read_to_string(file)
            .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))
            .and_then(|text| {
                let docker = cfg
                    .docker
                    .clone()
                    .unwrap_or_else(crate::config::DockerConfig::offline);
                crate::providers::docker::from_inspect(&text, &docker)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))
            }),
    };
    match found {
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

/// Whether a script names `catalog` outside comments (a word of its own, not `catalog_x`).
fn reads_catalog(text: &str) -> bool {
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .any(|l| {
            l.match_indices("catalog").any(|(i, _)| {
                let before = l[..i].chars().next_back();
                let after = l[i + "catalog".len()..].chars().next();
                let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
                !word(before) && !word(after)
            })
        })
}
