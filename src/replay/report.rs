//! `switchyard replay`: decide every recorded request with the scripts (and, with `--compare`,
//! with a candidate folder too) and print what happened, as text or JSON lines.
//!
//! Owns the text rendering of decisions and explain traces, shared by replay and the REPL, and
//! the comparison of two decisions. Prints (this is CLI code); decides nothing itself.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use super::Session;
use crate::check::Format;
use crate::config::Config;
use crate::proxy::dry::{Decision, HeaderDiff, Outcome};
use crate::recording::format::{self as record, Clock, RecordedRequest};
use crate::script::error::render_all;
use crate::script::ScriptsOrigin;

/// The explain trace: the canonical host and path the decision was made on, then each route
/// considered in priority order and why it did not match.
pub fn explain_text(d: &Decision) -> String {
    let mut out = String::new();
    if !d.path.is_empty() {
        // What every matcher saw: the canonical host and path, not the spelling that arrived.
        let _ = writeln!(out, "  canonical host {:?} path {:?}", d.host, d.path);
    }
    if d.considered.is_empty() {
        let _ = writeln!(out, "  no route on entrypoint {:?}", d.entrypoint);
    }
    for c in &d.considered {
        let mark = if c.matched { "✓" } else { "✗" };
        let _ = write!(
            out,
            "  {mark} {} (priority {}, {}) {}",
            c.route, c.priority, c.declared_at, c.rule
        );
        match &c.failed {
            Some(why) => {
                let _ = writeln!(out, "\n      {why}");
            }
            None => out.push('\n'),
        }
    }
    out
}

fn diff_text(out: &mut String, diff: &HeaderDiff) {
    for (n, v) in &diff.added {
        let _ = writeln!(out, "          + {n}: {v}");
    }
    for (n, was, now) in &diff.changed {
        let _ = writeln!(out, "          ~ {n}: {was} → {now}");
    }
    for n in &diff.removed {
        let _ = writeln!(out, "          - {n}");
    }
}

/// What the live router did: `route → service @ server, 200 in 1.2 ms`.
pub fn recorded_text(o: &record::RecordedOutcome) -> String {
    format!(
        "{} → {}{}, {} in {:.1} ms",
        o.route.as_deref().unwrap_or("(no route)"),
        o.service.as_deref().unwrap_or("-"),
        o.server
            .as_deref()
            .map(|s| format!(" @ {s}"))
            .unwrap_or_default(),
        o.status,
        o.duration_ms
    )
}

/// A decision in words: route, middleware notes, the outcome (and the trace when asked or
/// when no route matched).
pub fn decision_text(d: &Decision, explain: bool) -> String {
    let mut out = String::new();
    match (&d.route, &d.declared_at) {
        (Some(r), Some(at)) => {
            let _ = writeln!(out, "  route   {r} ({at})");
        }
        _ => {
            let _ = writeln!(
                out,
                "  route   none ({} considered on entrypoint {:?})",
                d.considered.len(),
                d.entrypoint
            );
        }
    }
    if explain || d.route.is_none() {
        for line in explain_text(d).lines() {
            let _ = writeln!(out, "        {line}");
        }
    }
    for (i, s) in d.steps.iter().enumerate() {
        let label = if i == 0 { "steps" } else { "" };
        let _ = writeln!(out, "  {label:<7} {s}");
    }
    match &d.outcome {
        Outcome::Forward {
            service,
            server,
            method,
            path,
            headers,
            sticky_cookie,
            mirrors,
        } => {
            let _ = writeln!(out, "  forward {service} @ {server}  {method} {path}");
            diff_text(&mut out, headers);
            if let Some(c) = sticky_cookie {
                let _ = writeln!(out, "  cookie  {c}");
            }
            if !mirrors.is_empty() {
                let _ = writeln!(out, "  mirror  {}", mirrors.join(", "));
            }
        }
        Outcome::Answer {
            status,
            location,
            by,
        } => {
            let _ = write!(out, "  answer  {status} ({by})");
            if let Some(l) = location {
                let _ = write!(out, " → {l}");
            }
            out.push('\n');
        }
    }
    out
}

/// Where a decision disagrees with what the live router recorded (empty when it agrees, or
/// when the recording has no outcome).
pub fn differs_from_recording(req: &RecordedRequest, d: &Decision) -> Vec<String> {
    let Some(rec) = &req.outcome else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if rec.route != d.route {
        out.push(format!(
            "route: recorded {}, now {}",
            rec.route.as_deref().unwrap_or("none"),
            d.route.as_deref().unwrap_or("none")
        ));
    }
    match &d.outcome {
        Outcome::Forward {
            server,
            path,
            service,
            ..
        } => {
            if rec.server.as_ref().is_some_and(|s| s != server) || rec.server.is_none() {
                out.push(format!(
                    "server: recorded {}, now {service} @ {server}",
                    rec.server.as_deref().unwrap_or("none")
                ));
            }
            if let Some(up) = &rec.upstream_path {
                if up != path {
                    out.push(format!("path: recorded {up}, now {path}"));
                }
            }
        }
        Outcome::Answer { status, .. } => {
            let redacted: Vec<&str> = req
                .headers
                .iter()
                .filter(|(_, v)| v == record::REDACTED)
                .map(|(n, _)| n.as_str())
                .collect();
            // A redacted credential explains a refusal the live router did not give; a request
            // refused live and in the replay alike does not differ.
            let why = if !redacted.is_empty() && matches!(status, 401 | 403) {
                format!(
                    " (the recording redacted {}: record with --record.redact to keep it)",
                    redacted.join(", ")
                )
            } else {
                String::new()
            };
            if rec.server.is_some() {
                out.push(format!(
                    "recorded forward to {}, now answered {status}{why}",
                    rec.server.as_deref().unwrap_or_default()
                ));
            } else if rec.status != *status {
                out.push(format!(
                    "status: recorded {}, now {status}{why}",
                    rec.status
                ));
            }
        }
    }
    out
}

/// Whether two decisions send the request to a different place or change it differently.
/// Unless `servers`, the server a balancer chose (and its sticky cookie) does not count: when a
/// candidate sends more or fewer requests to a round-robin service, every later pick shifts,
/// which says nothing about the change under review.
pub fn changed(a: &Decision, b: &Decision, servers: bool) -> bool {
    if a.route != b.route {
        return true;
    }
    match (&a.outcome, &b.outcome) {
        (
            Outcome::Forward {
                service: s1,
                server: h1,
                method: m1,
                path: p1,
                headers: d1,
                sticky_cookie: c1,
                mirrors: x1,
            },
            Outcome::Forward {
                service: s2,
                server: h2,
                method: m2,
                path: p2,
                headers: d2,
                sticky_cookie: c2,
                mirrors: x2,
            },
        ) => {
            s1 != s2
                || m1 != m2
                || p1 != p2
                || d1 != d2
                // Which requests a mirror copies depends on a counter, like the server a
                // balancer picks: compared only with the servers.
                || (servers && (h1 != h2 || c1.is_some() != c2.is_some() || x1 != x2))
        }
        (x, y) => x != y,
    }
}

#[derive(Serialize)]
struct ReplayLine<'a> {
    id: u64,
    request: String,
    decision: &'a Decision,
    #[serde(skip_serializing_if = "Option::is_none")]
    recorded: Option<&'a record::RecordedOutcome>,
    differs: Vec<String>,
}

#[derive(Serialize)]
struct CompareLine<'a> {
    id: u64,
    request: String,
    live: &'a Decision,
    candidate: &'a Decision,
}

#[derive(Serialize, Default)]
struct Totals {
    requests: usize,
    forwarded: usize,
    answered: usize,
    no_route: usize,
    differ_from_recording: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    changed: Option<usize>,
    skipped_lines: usize,
    /// With --compare: how many requests moved from one place to another, most first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    moves: Vec<Move>,
}

#[derive(Serialize)]
struct Move {
    from: String,
    to: String,
    requests: usize,
}

/// Where a decision sends a request, without the server: `route api → service api`,
/// `route old-blog → 301`, `no route → 404`.
fn place(d: &Decision) -> String {
    let route = match &d.route {
        Some(r) => format!("route {r}"),
        None => "no route".to_string(),
    };
    match &d.outcome {
        Outcome::Forward { service, .. } => format!("{route} → service {service}"),
        Outcome::Answer { status, .. } => format!("{route} → {status}"),
    }
}

fn print_json(v: &impl Serialize) {
    match serde_json::to_string(v) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("cannot encode: {e}"),
    }
}

/// `switchyard replay`. Returns the exit code: 0; 1 when the scripts do not build or the
/// recording cannot be read; with `--compare`, 2 when some request would change (so a CI job
/// can gate a script change on it).
pub fn replay(
    cfg: &Config,
    requests: &Path,
    format: Format,
    compare: Option<&Path>,
    explain: bool,
    servers: bool,
) -> i32 {
    let recording = match record::load(requests) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e:#}");
            return 1;
        }
    };
    for e in &recording.errors {
        eprintln!("{}:{}: skipped: {}", requests.display(), e.line, e.message);
    }
    let live = match Session::load(cfg) {
        Ok(s) => s,
        Err(errs) => {
            eprintln!("{}", render_all(&errs));
            return 1;
        }
    };
    let candidate = match compare {
        None => None,
        Some(dir) => {
            let mut c = cfg.clone();
            c.scripts = ScriptsOrigin::Dir(dir.to_path_buf());
            match Session::new(
                c.scripts.clone(),
                live.catalog.clone(),
                live.env.clone(),
                c.settings.clone(),
            ) {
                Ok(s) => Some(s),
                Err(errs) => {
                    eprintln!("candidate {}:\n{}", dir.display(), render_all(&errs));
                    return 1;
                }
            }
        }
    };
    let rt = match super::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e:#}");
            return 1;
        }
    };
    let mut totals = Totals {
        skipped_lines: recording.errors.len(),
        changed: candidate.as_ref().map(|_| 0),
        ..Default::default()
    };
    let (mut clock_a, mut clock_b) = (Clock::new(), Clock::new());
    let mut moves: std::collections::HashMap<(String, String), usize> = Default::default();
    rt.block_on(async {
        for req in &recording.requests {
            let d = match live.decide(req, &mut clock_a).await {
                Ok(d) => d,
                Err(e) => {
                    eprintln!("request #{}: skipped: {e}", req.id);
                    totals.skipped_lines += 1;
                    continue;
                }
            };
            totals.requests += 1;
            match (&d.route, &d.outcome) {
                (None, _) => totals.no_route += 1,
                (_, Outcome::Forward { .. }) => totals.forwarded += 1,
                (_, Outcome::Answer { .. }) => totals.answered += 1,
            }
            if let Some(cand) = &candidate {
                let Ok(c) = cand.decide(req, &mut clock_b).await else {
                    continue;
                };
                if !changed(&d, &c, servers) {
                    continue;
                }
                if let Some(n) = totals.changed.as_mut() {
                    *n += 1;
                }
                *moves.entry((place(&d), place(&c))).or_insert(0usize) += 1;
                match format {
                    Format::Json => print_json(&CompareLine {
                        id: req.id,
                        request: req.line(),
                        live: &d,
                        candidate: &c,
                    }),
                    Format::Text => {
                        println!("#{} {}", req.id, req.line());
                        println!("  live      {}", d.summary());
                        println!("  candidate {}", c.summary());
                        if d.summary() == c.summary() {
                            println!("  (same place; the request leaves differently)");
                            print!("{}", decision_text(&c, explain));
                        } else if explain {
                            print!("{}", decision_text(&c, true));
                        }
                    }
                }
                continue;
            }
            let differs = differs_from_recording(req, &d);
            if !differs.is_empty() {
                totals.differ_from_recording += 1;
            }
            match format {
                Format::Json => print_json(&ReplayLine {
                    id: req.id,
                    request: req.line(),
                    decision: &d,
                    recorded: req.outcome.as_ref(),
                    differs,
                }),
                Format::Text => {
                    println!("#{} {}", req.id, req.line());
                    print!("{}", decision_text(&d, explain));
                    if let Some(o) = &req.outcome {
                        println!("  recorded {}", recorded_text(o));
                    }
                    for line in &differs {
                        println!("  DIFFERS {line}");
                    }
                }
            }
        }
    });
    let mut moves: Vec<Move> = moves
        .into_iter()
        .map(|((from, to), requests)| Move { from, to, requests })
        .collect();
    moves.sort_by(|a, b| {
        b.requests
            .cmp(&a.requests)
            .then_with(|| (&a.from, &a.to).cmp(&(&b.from, &b.to)))
    });
    totals.moves = moves;
    match format {
        Format::Json => print_json(&serde_json::json!({ "summary": totals })),
        Format::Text => {
            let mut line = format!(
                "replayed {} requests: {} forwarded, {} answered by the router, {} without a route",
                totals.requests, totals.forwarded, totals.answered, totals.no_route
            );
            if let Some(n) = totals.changed {
                let _ = write!(line, "; {n} would change with the candidate scripts");
            } else if totals.differ_from_recording > 0 {
                let _ = write!(
                    line,
                    "; {} differ from the recording",
                    totals.differ_from_recording
                );
            }
            if totals.skipped_lines > 0 {
                let _ = write!(line, "; {} skipped", totals.skipped_lines);
            }
            if !totals.moves.is_empty() {
                println!("changes:");
                for m in &totals.moves {
                    println!("  {:>7} × {}  ⇒  {}", m.requests, m.from, m.to);
                }
            }
            println!("{line}");
        }
    }
    if totals.changed.is_some_and(|n| n > 0) {
        return 2;
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forward(route: &str, service: &str, server: &str) -> Decision {
        Decision {
            entrypoint: "web".into(),
            host: "a".into(),
            path: "/".into(),
            route: Some(route.into()),
            declared_at: None,
            considered: vec![],
            steps: vec![],
            outcome: Outcome::Forward {
                service: service.into(),
                server: server.into(),
                method: "GET".into(),
                path: "/".into(),
                headers: HeaderDiff::default(),
                sticky_cookie: None,
                mirrors: Vec::new(),
            },
        }
    }

    #[test]
    fn a_shifted_balancer_pick_is_a_change_only_when_asked() {
        let a = forward("r", "s", "127.0.0.1:1");
        let b = forward("r", "s", "127.0.0.1:2");
        assert!(!changed(&a, &b, false));
        assert!(changed(&a, &b, true));
        assert!(changed(&a, &forward("r", "other", "127.0.0.1:1"), false));
        assert!(changed(&a, &forward("r2", "s", "127.0.0.1:1"), false));
        assert_eq!(place(&a), "route r → service s");
    }

    #[test]
    fn a_refusal_recorded_and_replayed_alike_does_not_differ_for_redaction() {
        let line = r#"{"time":"2026-01-01T00:00:00Z","method":"GET","host":"a","path":"/","headers":[["authorization","<redacted>"]],"outcome":{"route":"r","status":401}}"#;
        let rec = record::parse(line);
        let req = &rec.requests[0];
        let mut refused = forward("r", "s", "127.0.0.1:1");
        refused.outcome = Outcome::Answer {
            status: 401,
            location: None,
            by: "middleware".into(),
        };
        assert_eq!(differs_from_recording(req, &refused), Vec::<String>::new());
        // Recorded as forwarded (the live request carried the credentials): that differs, and
        // the redaction is named as the likely reason.
        let forwarded = line.replace(r#""status":401"#, r#""server":"127.0.0.1:1","status":200"#);
        let rec = record::parse(&forwarded);
        let differs = differs_from_recording(&rec.requests[0], &refused);
        assert_eq!(differs.len(), 1, "{differs:?}");
        assert!(differs[0].contains("redacted authorization"), "{differs:?}");
    }
}
