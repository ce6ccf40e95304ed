//! The shell blocks of README.md and docs/*.md (` ```sh `, `bash`, `shell`, `console`): every
//! `switchyard …` or `cargo run [--release] -- …` command is run with the real binary far enough
//! to prove its subcommand and flags parse (clap's usage errors exit 2; anything else — a missing
//! certificate file, an address in use, a running server killed after 2 s — passes), every other
//! line must be valid shell (`bash -n`), and every repository path a block names must exist. In
//! ` ```console ` style blocks (lines starting with `$ `) only those lines are commands.
//!
//! Commands run in a temporary folder with no `SWITCHYARD_*` variable, listen addresses moved to
//! `127.0.0.1:0`, and a 2 s limit each, so the docs' servers never bind real ports or linger.

use std::path::Path;
use std::time::{Duration, Instant};

/// `(file:line, command)` for every command line of every shell block.
fn shell_commands() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec!["README.md".to_string()];
    let mut docs: Vec<String> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".md") && n != "flags.md")
        .map(|n| format!("docs/{n}"))
        .collect();
    docs.sort();
    files.extend(docs);
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(root.join(&f)).unwrap();
        let mut lines = text.lines().enumerate();
        while let Some((_, line)) = lines.next() {
            let Some(info) = line.trim_start().strip_prefix("```") else {
                continue;
            };
            let lang = info.split(',').next().unwrap_or("").trim();
            let mut block = Vec::new();
            for (j, l) in lines.by_ref() {
                if l.trim() == "```" {
                    break;
                }
                block.push((j + 1, l.to_string()));
            }
            if !["sh", "bash", "shell", "console"].contains(&lang) {
                continue;
            }
            let prompted = block.iter().any(|(_, l)| l.starts_with("$ "));
            let mut pending = String::new();
            let mut at = String::new();
            for (n, l) in block {
                let l = if prompted {
                    match l.strip_prefix("$ ") {
                        Some(c) => c.to_string(),
                        None if !pending.is_empty() => l,
                        None => continue,
                    }
                } else {
                    l
                };
                if pending.is_empty() {
                    at = format!("{f}:{n}");
                }
                match l.trim_end().strip_suffix('\\') {
                    Some(head) => {
                        pending.push_str(head);
                        pending.push(' ');
                    }
                    None => {
                        pending.push_str(&l);
                        let cmd = std::mem::take(&mut pending);
                        if !cmd.trim().is_empty() && !cmd.trim_start().starts_with('#') {
                            out.push((at.clone(), cmd));
                        }
                    }
                }
            }
        }
    }
    out
}

/// The switchyard arguments of a command line, when it runs switchyard.
fn switchyard_args(cmd: &str) -> Option<Vec<String>> {
    let line = cmd.split(" # ").next().unwrap_or(cmd);
    let line = line.trim().trim_end_matches('&').trim();
    let words = shell_words(line)?;
    let rest = if words.first().map(String::as_str) == Some("switchyard") {
        words.get(1..)?.to_vec()
    } else if words.first().map(String::as_str) == Some("cargo")
        && words.get(1).map(String::as_str) == Some("run")
    {
        let dash = words.iter().position(|w| w == "--")?;
        words.get(dash + 1..)?.to_vec()
    } else {
        return None;
    };
    Some(
        rest.into_iter()
            .map(|a| {
                // Listen addresses: never the docs' real ports.
                match a.split_once('=') {
                    Some((name, addr))
                        if !a.starts_with('-')
                            && (addr.starts_with("0.0.0.0:") || addr.starts_with(':')) =>
                    {
                        format!("{name}=127.0.0.1:0")
                    }
                    _ => a,
                }
            })
            .collect(),
    )
}

/// Splits like a shell would for simple lines (quotes, no expansions); `None` on a pipeline,
/// redirection or substitution, which are left to `bash -n`.
fn shell_words(line: &str) -> Option<Vec<String>> {
    if line.contains(['|', '>', '<', ';', '`', '$']) || line.contains("&&") {
        return None;
    }
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut started = false;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                started = true;
            }
            (None, c) if c.is_whitespace() => {
                if started {
                    out.push(std::mem::take(&mut cur));
                    started = false;
                }
            }
            (None, c) => {
                cur.push(c);
                started = true;
            }
        }
    }
    if started {
        out.push(cur);
    }
    Some(out)
}

/// Runs switchyard with `args` for at most 2 s: `Err` with its stderr when clap refused them.
fn parses(args: &[String], cwd: &Path) -> Result<(), String> {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("SWITCHYARD_") {
            cmd.env_remove(key);
        }
    }
    let mut child = cmd
        .args(args)
        .current_dir(cwd)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match child.try_wait().map_err(|e| e.to_string())? {
            Some(status) => {
                let mut err = String::new();
                if let Some(mut s) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut s, &mut err);
                }
                return if status.code() == Some(2) && err.contains("error:") {
                    Err(err)
                } else {
                    Ok(())
                };
            }
            None if Instant::now() > deadline => {
                // Still running: a server that started. Stopped by PID (ours).
                let _ = child.kill();
                let _ = child.wait();
                return Ok(());
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

#[test]
fn every_shell_command_in_the_docs_parses() {
    let commands = shell_commands();
    assert!(
        commands.len() >= 15,
        "found only {} commands",
        commands.len()
    );
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cwd = tempfile::tempdir().unwrap();
    let mut ran = 0;
    for (at, cmd) in &commands {
        let syntax = std::process::Command::new("bash")
            .args(["-n", "-c", cmd])
            .output()
            .unwrap();
        assert!(
            syntax.status.success(),
            "{at}: not valid shell: {cmd}\n{}",
            String::from_utf8_lossy(&syntax.stderr)
        );
        for word in cmd.split_whitespace() {
            let w = word.trim_matches(|c| c == '\'' || c == '"' || c == ',');
            let repo_path = [
                "scripts/",
                "examples/",
                "stdlib/",
                "benches/",
                "tests/",
                "docs/",
            ]
            .iter()
            .any(|p| w.starts_with(p));
            if repo_path && !w.contains('*') {
                assert!(
                    root.join(w).exists(),
                    "{at}: {w} does not exist in the repository"
                );
            }
        }
        if let Some(args) = switchyard_args(cmd) {
            if let Err(e) = parses(&args, cwd.path()) {
                panic!("{at}: the command does not parse: {cmd}\n{e}");
            }
            ran += 1;
        }
    }
    assert!(ran >= 10, "only {ran} switchyard commands were run");
}

/// The test itself can fail: a renamed flag is caught.
#[test]
fn a_wrong_flag_is_caught() {
    let cwd = tempfile::tempdir().unwrap();
    let args =
        switchyard_args("switchyard run --entrypoint web=0.0.0.0:80 --no-such-flag").unwrap();
    assert_eq!(args[2], "web=127.0.0.1:0");
    assert!(parses(&args, cwd.path()).is_err());
    let args = switchyard_args("cargo run --release -- check --scripts nowhere").unwrap();
    assert!(
        parses(&args, cwd.path()).is_ok(),
        "a runtime error is not a parse error"
    );
}
