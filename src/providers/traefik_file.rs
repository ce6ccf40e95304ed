//! Traefik's file provider: dynamic configuration files (`--dynamic-config FILE|DIR`, Traefik's
//! `providers.file.filename|directory`), YAML or TOML, watched. Each file becomes one catalog
//! entry of provider `file` whose labels are the file's keys as Traefik labels
//! (`http.routers.r.rule` → `traefik.http.routers.r.rule`), so `stdlib/traefik.rhai` reads files
//! and labels the same way and `name@file` references resolve across both.
//!
//! Invariants: a snapshot is sent only when every file parsed; a broken save is reported with
//! its file (and line:column where the parser gives one) and the last good snapshot stays in
//! use. Go templates are expanded only for `{{ env "NAME" }}` (and `{{ env "NAME" | default "x" }}`);
//! any other template is an error naming the file. Must never: send a partial snapshot.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use notify::{EventKind, RecursiveMode, Watcher};
use tracing::{error, info, warn};

use crate::catalog::{Catalog, CatalogEntry, ProviderReport, ProviderSender};

/// The name the control loop knows this provider's snapshots by.
pub const PROVIDER: &str = "traefik-file";

/// The configuration files under `path`: itself, or a folder's `*.yml`, `*.yaml` and `*.toml`
/// (sub-folders included), in name order.
fn files(path: &Path) -> Result<Vec<PathBuf>, String> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = Vec::new();
    let mut dirs = vec![path.to_path_buf()];
    while let Some(d) = dirs.pop() {
        let entries = std::fs::read_dir(&d)
            .map_err(|e| format!("dynamic configuration {}: {e}", d.display()))?;
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p
                .extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| ["yml", "yaml", "toml"].contains(&x.to_ascii_lowercase().as_str()))
            {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Expands `{{ env "NAME" }}` and `{{ env "NAME" | default "x" }}` with `env`.
pub fn expand_templates(
    file: &Path,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or_else(|| {
            format!(
                "{}:{}: \"{{{{\" without \"}}}}\"",
                file.display(),
                line_of(text, text.len() - rest.len() + start)
            )
        })?;
        let expr = after[..end].trim();
        let value = env_template(expr, env).ok_or_else(|| {
            format!(
                "{}:{}: template {{{{ {expr} }}}} is not supported (only env \"NAME\", with an optional | default \"x\")",
                file.display(),
                line_of(text, text.len() - rest.len() + start)
            )
        })?;
        out.push_str(&value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

fn line_of(text: &str, offset: usize) -> usize {
    crate::traefik::source::line_col(text, offset).0
}

/// `env "NAME"` or `env "NAME" | default "x"`.
fn env_template(expr: &str, env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    let (call, default) = match expr.split_once('|') {
        Some((c, d)) => {
            let d = d.trim().strip_prefix("default")?.trim();
            (c.trim(), Some(quoted(d)?))
        }
        None => (expr, None),
    };
    let name = quoted(call.strip_prefix("env")?.trim())?;
    match (env(&name), default) {
        (Some(v), _) if !v.is_empty() => Some(v),
        (_, Some(d)) => Some(d),
        (v, None) => Some(v.unwrap_or_default()),
    }
}

fn quoted(s: &str) -> Option<String> {
    let s = s.trim();
    let inner = s
        .strip_prefix('"')
        .and_then(|x| x.strip_suffix('"'))
        .or_else(|| s.strip_prefix('`').and_then(|x| x.strip_suffix('`')))?;
    Some(inner.to_string())
}

/// One file as a catalog entry.
fn entry_of(file: &Path, root: &Path) -> Result<CatalogEntry, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("dynamic configuration {}: {e}", file.display()))?;
    let text = expand_templates(file, &text, &|n| std::env::var(n).ok())?;
    let value = crate::traefik::source::parse_document(file, &text)?;
    let mut pairs = Vec::new();
    crate::traefik::source::flatten("", &value, &mut pairs);
    let labels = pairs
        .into_iter()
        // Plain lists are read joined (`entrypoints: [a, b]` → "a,b"); their items are not.
        .filter(|(k, _)| !k.ends_with(']'))
        .map(|(k, v)| (format!("traefik.{k}"), v))
        .collect();
    let name = file
        .strip_prefix(root)
        .unwrap_or(file)
        .display()
        .to_string();
    Ok(CatalogEntry {
        name: if name.is_empty() {
            file.display().to_string()
        } else {
            name
        },
        provider: PROVIDER.into(),
        labels,
        servers: Vec::new(),
        container: None,
    })
}

/// Reads every file under `path`; the first file that does not parse fails the whole load.
pub fn load(path: &Path) -> Result<Catalog, String> {
    let root = if path.is_dir() {
        path
    } else {
        path.parent().unwrap_or(Path::new(""))
    };
    let mut c = Catalog::default();
    for f in files(path)? {
        c.entries.push(entry_of(&f, root)?);
    }
    Ok(c)
}

/// Watches `path` (a file's folder, or the folder itself, recursively) and sends a snapshot
/// after each change; a load that fails is reported and changes nothing. The returned watcher
/// must be kept alive.
pub fn watch(path: &Path, tx: ProviderSender) -> notify::Result<notify::RecommendedWatcher> {
    let target = path.to_path_buf();
    let (dir, mode) = if path.is_dir() {
        (path.to_path_buf(), RecursiveMode::Recursive)
    } else {
        let d = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        (d, RecursiveMode::NonRecursive)
    };
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        match res {
            Ok(ev) if !matches!(ev.kind, EventKind::Access(_)) => {
                let relevant =
                    target.is_dir() || ev.paths.iter().any(|p| p.file_name() == target.file_name());
                if !relevant {
                    return;
                }
                match load(&target) {
                    Ok(c) => {
                        info!(path = %target.display(), files = c.entries.len(), "dynamic configuration changed");
                        let _ = tx.try_send(ProviderReport::Snapshot {
                            provider: PROVIDER,
                            catalog: Arc::new(c),
                        });
                    }
                    Err(e) => {
                        error!("{e}; keeping the last good dynamic configuration");
                        let _ = tx.try_send(ProviderReport::SyncFailed {
                            provider: PROVIDER,
                            error: e,
                        });
                    }
                }
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "dynamic configuration watcher error"),
        }
    })?;
    watcher.watch(&dir, mode)?;
    Ok(watcher)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_templates_expand_and_others_are_refused() {
        let env = |n: &str| (n == "DOMAIN").then(|| "example.com".to_string());
        let f = Path::new("d.yml");
        assert_eq!(
            expand_templates(f, "rule: Host(`{{ env \"DOMAIN\" }}`)", &env).unwrap(),
            "rule: Host(`example.com`)"
        );
        assert_eq!(
            expand_templates(f, "a: {{env \"NOPE\" | default \"x\"}}", &env).unwrap(),
            "a: x"
        );
        assert_eq!(
            expand_templates(f, "a: {{ env \"NOPE\" }}", &env).unwrap(),
            "a: "
        );
        let e = expand_templates(f, "a: 1\nb: {{ .Name }}", &env).unwrap_err();
        assert!(e.starts_with("d.yml:2: template {{ .Name }}"), "{e}");
        assert!(expand_templates(f, "a: {{ env", &env).is_err());
    }

    #[test]
    fn a_file_becomes_one_entry_of_traefik_labels() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("app.yml"),
            "http:\n  routers:\n    app:\n      rule: Host(`a.test`)\n      entryPoints: [web]\n      middlewares: [auth]\n      service: app\n  services:\n    app:\n      loadBalancer:\n        servers:\n          - url: http://127.0.0.1:9001/\n  middlewares:\n    auth:\n      basicAuth:\n        users: [\"u:h\"]\n",
        )
        .unwrap();
        let c = load(dir.path()).unwrap();
        assert_eq!(c.entries.len(), 1);
        let e = &c.entries[0];
        assert_eq!(
            (e.name.as_str(), e.provider.as_str()),
            ("app.yml", "traefik-file")
        );
        let labels: Vec<(&str, &str)> = e
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            labels,
            [
                ("traefik.http.middlewares.auth.basicauth.users", "u:h"),
                ("traefik.http.routers.app.entrypoints", "web"),
                ("traefik.http.routers.app.middlewares", "auth"),
                ("traefik.http.routers.app.rule", "Host(`a.test`)"),
                ("traefik.http.routers.app.service", "app"),
                (
                    "traefik.http.services.app.loadbalancer.servers[0].url",
                    "http://127.0.0.1:9001/"
                ),
            ]
        );
        std::fs::write(dir.path().join("broken.toml"), "[http\n").unwrap();
        let e = load(dir.path()).unwrap_err();
        assert!(e.contains("broken.toml:1:"), "{e}");
    }
}
