//! Where Traefik's static configuration comes from, read as Traefik reads it: exactly one of a
//! configuration file (`--configfile`, else `traefik.toml|yml|yaml` in `/etc/traefik/`,
//! `$XDG_CONFIG_HOME/`, `$HOME/.config/`, the working directory), the command line, or the
//! `TRAEFIK_*` environment variables — the first that has anything wins, the others are not
//! read. Every form is flattened into one key space: lower-case dotted keys (`entrypoints.web.
//! address`), list items as `key[N]` (lists of plain values are also joined with commas), an
//! empty table or a bare flag as `true`.
//!
//! Invariants: keys are lower case with no leading dashes; a file that does not parse is an
//! error with its line and column; nothing here decides what a key means (`translate` does).

use std::path::{Path, PathBuf};

/// One setting: its key (lower case, dotted) and value as text.
pub type Pair = (String, String);

/// The settings and where they came from (`command line`, `environment`, a file's path).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    pub from: String,
    pub pairs: Vec<Pair>,
}

/// Reads the static configuration from the first source that has one: `args` (Traefik's
/// command line, without the program name), `env` (the process environment) and the files.
pub fn load(args: &[String], env: &[(String, String)]) -> Result<Settings, String> {
    let flags = parse_args(args)?;
    let file = flags
        .iter()
        .find(|(k, _)| k == "configfile")
        .map(|(_, v)| PathBuf::from(v))
        .or_else(|| find_file(env));
    if let Some(path) = file {
        return read_file(&path);
    }
    if !flags.is_empty() {
        return Ok(Settings {
            from: "command line".into(),
            pairs: flags,
        });
    }
    Ok(Settings {
        from: "environment".into(),
        pairs: parse_env(env),
    })
}

/// Traefik's command line: `--key=value`, `--key value` (a next argument that is not a flag)
/// or `--key` alone (`true`). Keys are case-insensitive.
pub fn parse_args(args: &[String]) -> Result<Vec<Pair>, String> {
    let mut out = Vec::new();
    let mut it = args.iter().peekable();
    while let Some(arg) = it.next() {
        let Some(flag) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
            return Err(format!(
                "{arg:?} is not a flag: Traefik's command line is --key=value flags only"
            ));
        };
        let (key, value) = match flag.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => {
                let value = match it.peek() {
                    Some(next) if !next.starts_with('-') => it.next().cloned().unwrap_or_default(),
                    _ => "true".to_string(),
                };
                (flag.to_string(), value)
            }
        };
        if key.is_empty() {
            return Err(format!("{arg:?}: a flag needs a name"));
        }
        out.push((key.to_ascii_lowercase(), value));
    }
    Ok(out)
}

/// `TRAEFIK_ENTRYPOINTS_WEB_ADDRESS=:80` → `entrypoints.web.address`.
pub fn parse_env(env: &[(String, String)]) -> Vec<Pair> {
    let mut out: Vec<Pair> = env
        .iter()
        .filter_map(|(k, v)| {
            let rest = k.strip_prefix("TRAEFIK_")?;
            (!rest.is_empty()).then(|| (rest.to_ascii_lowercase().replace('_', "."), v.clone()))
        })
        .collect();
    out.sort();
    out
}

/// The first of Traefik's default file locations that exists.
fn find_file(env: &[(String, String)]) -> Option<PathBuf> {
    let var = |name: &str| {
        env.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| PathBuf::from(v))
    };
    let mut dirs = vec![PathBuf::from("/etc/traefik")];
    if let Some(x) = var("XDG_CONFIG_HOME") {
        dirs.push(x);
    }
    if let Some(h) = var("HOME") {
        dirs.push(h.join(".config"));
    }
    dirs.push(PathBuf::from("."));
    dirs.iter()
        .flat_map(|d| ["toml", "yml", "yaml"].map(|ext| d.join(format!("traefik.{ext}"))))
        .find(|p| p.is_file())
}

/// Reads and flattens a `traefik.toml` / `traefik.yml` file.
pub fn read_file(path: &Path) -> Result<Settings, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("Traefik configuration file {}: {e}", path.display()))?;
    let value = parse_document(path, &text)?;
    let mut pairs = Vec::new();
    flatten("", &value, &mut pairs);
    Ok(Settings {
        from: path.display().to_string(),
        pairs,
    })
}

/// A YAML or TOML document (by extension; TOML unless `.yml`/`.yaml`) as a JSON value.
pub fn parse_document(path: &Path, text: &str) -> Result<serde_json::Value, String> {
    let yaml = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("yml") || e.eq_ignore_ascii_case("yaml"));
    if yaml {
        if text.trim().is_empty() {
            return Ok(serde_json::Value::Object(Default::default()));
        }
        serde_saphyr::from_str::<serde_json::Value>(text)
            .map_err(|e| format!("{}: {e}", path.display()))
    } else {
        let v: toml::Value = toml::from_str(text).map_err(|e| {
            let at = e
                .span()
                .map(|s| {
                    let (line, col) = line_col(text, s.start);
                    format!(":{line}:{col}")
                })
                .unwrap_or_default();
            format!("{}{at}: {}", path.display(), e.message())
        })?;
        serde_json::to_value(v).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// 1-based line and column of byte `offset` in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Flattens `v` under `prefix` into `out`.
pub fn flatten(prefix: &str, v: &serde_json::Value, out: &mut Vec<Pair>) {
    use serde_json::Value;
    let key = |k: &str| {
        let k = k.to_ascii_lowercase();
        if prefix.is_empty() {
            k
        } else {
            format!("{prefix}.{k}")
        }
    };
    match v {
        Value::Object(map) if map.is_empty() => {
            if !prefix.is_empty() {
                out.push((prefix.to_string(), "true".into()));
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                flatten(&key(k), v, out);
            }
        }
        Value::Array(items) => {
            let plain = items.iter().all(|i| !i.is_object() && !i.is_array());
            if plain {
                let joined: Vec<String> = items.iter().map(scalar).collect();
                out.push((prefix.to_string(), joined.join(",")));
            }
            for (i, item) in items.iter().enumerate() {
                flatten(&format!("{prefix}[{i}]"), item, out);
            }
        }
        Value::Null => out.push((prefix.to_string(), "true".into())),
        other => out.push((prefix.to_string(), scalar(other))),
    }
}

fn scalar(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn command_line_forms() {
        let got = parse_args(&s(&[
            "--api",
            "--entryPoints.Web.Address=:80",
            "--docker.domain",
            "docker.localhost",
            "--docker.swarmMode",
            "--entryPoints=Name:http Address::80",
        ]))
        .unwrap();
        assert_eq!(
            got,
            [
                ("api", "true"),
                ("entrypoints.web.address", ":80"),
                ("docker.domain", "docker.localhost"),
                ("docker.swarmmode", "true"),
                ("entrypoints", "Name:http Address::80"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        assert!(parse_args(&s(&["traefik"])).is_err());
    }

    #[test]
    fn environment_and_files_flatten_into_the_same_keys() {
        let env = vec![
            (
                "TRAEFIK_ENTRYPOINTS_WEB_ADDRESS".to_string(),
                ":80".to_string(),
            ),
            ("TRAEFIK_PROVIDERS_DOCKER".to_string(), "true".to_string()),
            ("PATH".to_string(), "/bin".to_string()),
        ];
        assert_eq!(
            parse_env(&env),
            [
                ("entrypoints.web.address", ":80"),
                ("providers.docker", "true"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        let yaml = "entryPoints:\n  web:\n    address: \":80\"\n    forwardedHeaders:\n      trustedIPs: [\"10.0.0.0/8\", \"192.168.0.1\"]\nproviders:\n  docker: {}\napi:\n  insecure: true\nping:\n";
        let v = parse_document(Path::new("traefik.yml"), yaml).unwrap();
        let mut out = Vec::new();
        flatten("", &v, &mut out);
        out.sort();
        assert_eq!(
            out,
            [
                ("api.insecure", "true"),
                ("entrypoints.web.address", ":80"),
                (
                    "entrypoints.web.forwardedheaders.trustedips",
                    "10.0.0.0/8,192.168.0.1"
                ),
                (
                    "entrypoints.web.forwardedheaders.trustedips[0]",
                    "10.0.0.0/8"
                ),
                (
                    "entrypoints.web.forwardedheaders.trustedips[1]",
                    "192.168.0.1"
                ),
                ("ping", "true"),
                ("providers.docker", "true"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        let toml = "defaultEntryPoints = [\"http\"]\n[entryPoints.http]\naddress = \":80\"\n[docker]\ndomain = \"a.com\"\n[api]\n";
        let v = parse_document(Path::new("traefik.toml"), toml).unwrap();
        let mut out = Vec::new();
        flatten("", &v, &mut out);
        out.sort();
        assert_eq!(
            out,
            [
                ("api", "true"),
                ("defaultentrypoints", "http"),
                ("defaultentrypoints[0]", "http"),
                ("docker.domain", "a.com"),
                ("entrypoints.http.address", ":80"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
    }

    #[test]
    fn a_broken_file_says_where() {
        let e = parse_document(Path::new("t.toml"), "[api]\ninsecure = \n").unwrap_err();
        assert!(e.starts_with("t.toml:2:"), "{e}");
        let e = parse_document(Path::new("t.yml"), "api:\n  insecure: [\n").unwrap_err();
        assert!(e.contains("t.yml"), "{e}");
    }
}
