//! `switchyard repl`: an interactive explorer of why a request routes where it does.
//!
//! Owns the REPL's command language (`parse_command`, with typed-in requests read by
//! `record::parse_adhoc`: pure, unit-tested), the
//! state it works on (`Repl`: a `Session`, the recorded and typed requests, the selected one;
//! `Repl::execute` turns a command into the text to print) and the terminal loop (`run`:
//! rustyline with history, completion of commands and request ids, multi-line input while
//! brackets are open, a watcher that rebuilds the scripts before the next command after a file
//! changed).
//!
//! Invariants: every decision comes from `Session::decide` (the live proxy's dry run) and every
//! expression from `script::eval_with_request` (the hooks' sandbox); this module imports no
//! `rhai`. A failed reload keeps the session's previous table. Prints only in `run`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rustyline::completion::Completer;
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::DefaultHistory;
use rustyline::validate::{ValidationContext, ValidationResult, Validator};
use rustyline::{Editor, Helper};

use super::report::{decision_text, differs_from_recording, recorded_text};
use super::Session;
use crate::config::Config;
use crate::middleware::HookRequest;
use crate::recording::format::{self as record, Clock, RecordedRequest};
use crate::routing::matcher::canonical_ip;
use crate::routing::TableInfo;
use crate::script::error::render_all;

pub const PROMPT: &str = "switchyard> ";

/// At most this many lines from `:list`.
pub const LIST_CAP: usize = 50;

/// The `:` commands, for `:help` and completion.
pub const COMMANDS: &[(&str, &str)] = &[
    (":help", "this list"),
    (
        ":list [FILTER]",
        "recorded requests; FILTER is text, route=NAME or status=NNN",
    ),
    (":show ID", "a request in full, headers included"),
    (
        ":run ID",
        "decide a request and select it (or just type ID)",
    ),
    (
        ":explain [ID]",
        "every route considered and why it did not match",
    ),
    (":select ID", "select a request for expressions"),
    (":routes", "the route table"),
    (
        ":reload",
        "rebuild the scripts (a failed build keeps the old table)",
    ),
    (":load FILE", "read another recording (JSON lines or HAR)"),
    (":quit", "leave (or Ctrl-D)"),
];

/// What `:list` keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    /// Case-insensitive substring of the listed line.
    Text(String),
    /// The recorded route.
    Route(String),
    /// The recorded status.
    Status(u16),
}

/// One line of input, understood.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Empty,
    Help,
    List(Option<Filter>),
    Show(String),
    Run(String),
    Explain(Option<String>),
    Select(String),
    Routes,
    Reload,
    Load(PathBuf),
    Quit,
    /// A request typed in: `GET http://host/path H:Name=Value C:1.2.3.4`.
    Request(Box<RecordedRequest>),
    /// A request typed with a path only (`GET /path …`): sent to the last request's host.
    Relative(String),
    /// A Rhai expression on the selected request.
    Eval(String),
}

/// `#12` or `12` or `a3` → the id without `#`, when `word` is one.
fn as_id(word: &str) -> Option<String> {
    let id = word.strip_prefix('#').unwrap_or(word);
    let digits = id.strip_prefix('a').unwrap_or(id);
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then(|| id.to_string())
}

fn need_id(cmd: &str, arg: &str) -> Result<String, String> {
    if arg.is_empty() {
        return Err(format!("{cmd} needs a request id, e.g. {cmd} 1"));
    }
    as_id(arg).ok_or_else(|| format!("{arg:?} is not a request id (1, #1 or a1)"))
}

fn no_arg(cmd: Command, name: &str, arg: &str) -> Result<Command, String> {
    if arg.is_empty() {
        Ok(cmd)
    } else {
        Err(format!(":{name} takes no argument"))
    }
}

fn parse_filter(arg: &str) -> Result<Option<Filter>, String> {
    if arg.is_empty() {
        return Ok(None);
    }
    if let Some(route) = arg.strip_prefix("route=") {
        return Ok(Some(Filter::Route(route.to_string())));
    }
    if let Some(status) = arg.strip_prefix("status=") {
        return status
            .parse()
            .map(|s| Some(Filter::Status(s)))
            .map_err(|_| format!("status={status}: not a status code"));
    }
    Ok(Some(Filter::Text(arg.to_string())))
}

/// Whether `line` is a typed request: an upper-case method then an absolute http(s) URL.
fn is_adhoc(line: &str) -> bool {
    let mut words = line.split_whitespace();
    let method = words.next().unwrap_or("");
    let url = words.next().unwrap_or("");
    !method.is_empty()
        && method.bytes().all(|b| b.is_ascii_uppercase())
        && (url.starts_with("http://") || url.starts_with("https://") || url.starts_with('/'))
}

/// Understands one line of input. Never fails on a Rhai expression: anything that is neither a
/// `:` command, an id nor a typed request is an expression.
pub fn parse_command(line: &str) -> Result<Command, String> {
    let line = line.trim();
    if line.is_empty() {
        return Ok(Command::Empty);
    }
    if matches!(line, "help" | "?") {
        return Ok(Command::Help);
    }
    if let Some(rest) = line.strip_prefix(':') {
        let (name, arg) = match rest.split_once(char::is_whitespace) {
            Some((n, a)) => (n, a.trim()),
            None => (rest, ""),
        };
        return match name {
            "help" | "h" | "?" => no_arg(Command::Help, name, arg),
            "list" | "ls" | "l" => parse_filter(arg).map(Command::List),
            "show" => need_id(":show", arg).map(Command::Show),
            "run" | "r" => need_id(":run", arg).map(Command::Run),
            "explain" | "e" | "why" => {
                if arg.is_empty() {
                    Ok(Command::Explain(None))
                } else {
                    need_id(":explain", arg).map(|id| Command::Explain(Some(id)))
                }
            }
            "select" | "sel" => need_id(":select", arg).map(Command::Select),
            "routes" => no_arg(Command::Routes, name, arg),
            "reload" => no_arg(Command::Reload, name, arg),
            "load" if arg.is_empty() => Err(":load needs a file".to_string()),
            "load" => Ok(Command::Load(PathBuf::from(arg))),
            "quit" | "q" | "exit" => no_arg(Command::Quit, name, arg),
            _ => Err(format!("unknown command :{name} (:help lists them)")),
        };
    }
    if let Some(id) = as_id(line) {
        return Ok(Command::Run(id));
    }
    if is_adhoc(line) {
        if line
            .split_whitespace()
            .nth(1)
            .is_some_and(|u| u.starts_with('/'))
        {
            return Ok(Command::Relative(line.to_string()));
        }
        return record::parse_adhoc(line).map(|r| Command::Request(Box::new(r)));
    }
    Ok(Command::Eval(line.to_string()))
}

/// Whether `input` (a Rhai expression) still has an open bracket or string, so Enter should
/// continue it on the next line.
pub fn incomplete(input: &str) -> bool {
    let trimmed = input.trim_start();
    if trimmed.starts_with(':') || is_adhoc(trimmed) {
        return false;
    }
    let mut depth: i64 = 0;
    let mut string: Option<char> = None;
    let mut escaped = false;
    for c in input.chars() {
        if let Some(q) = string {
            if escaped {
                escaped = false;
            } else if c == '\\' && q != '`' {
                escaped = true;
            } else if c == q {
                string = None;
            }
            continue;
        }
        match c {
            '"' | '`' | '\'' => string = Some(c),
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            _ => {}
        }
    }
    depth > 0 || string == Some('`')
}

/// A request the REPL knows: recorded (`1`, `2`, …) or typed in (`a1`, `a2`, …).
#[derive(Debug, Clone)]
struct Entry {
    id: String,
    req: RecordedRequest,
}

impl Entry {
    /// `#1 GET api.x.com/v1/users → api 200`
    fn list_line(&self) -> String {
        let recorded = match &self.req.outcome {
            Some(o) => format!(
                "{} {}",
                o.route.as_deref().unwrap_or("(no route)"),
                o.status
            ),
            None if self.id.starts_with('a') => "(typed in)".to_string(),
            None => "(not recorded)".to_string(),
        };
        format!("#{} {} → {recorded}", self.id, self.req.line())
    }

    fn keep(&self, filter: &Option<Filter>) -> bool {
        let outcome = self.req.outcome.as_ref();
        match filter {
            None => true,
            Some(Filter::Text(t)) => self.list_line().to_lowercase().contains(&t.to_lowercase()),
            Some(Filter::Route(r)) => outcome.and_then(|o| o.route.as_deref()) == Some(r.as_str()),
            Some(Filter::Status(s)) => outcome.map(|o| o.status) == Some(*s),
        }
    }
}

/// What a command leaves to print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Text(String),
    Quit,
}

/// The REPL's state: a session and the requests it explores.
pub struct Repl {
    session: Session,
    entries: Vec<Entry>,
    selected: Option<usize>,
    typed: u32,
    clock: Clock,
    rt: tokio::runtime::Runtime,
    /// Set by the scripts-folder watcher; cleared by every reload.
    pub changed: Arc<AtomicBool>,
    /// `let` variables of earlier expressions.
    vars: crate::script::Variables,
}

impl Repl {
    pub fn new(session: Session) -> anyhow::Result<Repl> {
        Ok(Repl {
            session,
            entries: Vec::new(),
            selected: None,
            typed: 0,
            clock: Clock::new(),
            rt: super::runtime()?,
            changed: Arc::new(AtomicBool::new(false)),
            vars: crate::script::Variables::default(),
        })
    }

    /// The ids of every request, for completion.
    pub fn ids(&self) -> Vec<String> {
        self.entries.iter().map(|e| e.id.clone()).collect()
    }

    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Replaces the recorded requests with the recording at `path` (typed ones stay).
    pub fn load(&mut self, path: &Path) -> String {
        let recording = match record::load(path) {
            Ok(r) => r,
            Err(e) => return format!("error: {e:#}"),
        };
        let mut out = String::new();
        for e in &recording.errors {
            let _ = writeln!(out, "{}:{}: skipped: {}", path.display(), e.line, e.message);
        }
        self.entries.retain(|e| e.id.starts_with('a'));
        self.selected = None;
        self.clock = Clock::new();
        let n = recording.requests.len();
        let recorded = recording.requests.into_iter().map(|r| Entry {
            id: r.id.to_string(),
            req: r,
        });
        let typed = std::mem::take(&mut self.entries);
        self.entries = recorded.chain(typed).collect();
        let _ = write!(out, "loaded {n} requests from {}", path.display());
        out
    }

    fn find(&self, id: &str) -> Result<usize, String> {
        self.entries
            .iter()
            .position(|e| e.id == id)
            .ok_or_else(|| format!("no request #{id} (:list shows them)"))
    }

    fn current(&self, id: Option<&str>) -> Result<usize, String> {
        match (id, self.selected) {
            (Some(id), _) => self.find(id),
            (None, Some(i)) => Ok(i),
            (None, None) => Err("no request selected: :run ID or :select ID first".to_string()),
        }
    }

    /// Runs one command; errors come back as text starting with `error:`.
    pub fn execute(&mut self, cmd: Command) -> Reply {
        let text = match cmd {
            Command::Quit => return Reply::Quit,
            Command::Empty => Ok(String::new()),
            Command::Help => Ok(help()),
            Command::List(filter) => Ok(self.list(&filter)),
            Command::Show(id) => self.find(&id).map(|i| self.show(i)),
            Command::Run(id) => self.find(&id).and_then(|i| self.decide(i, false)),
            Command::Explain(id) => self
                .current(id.as_deref())
                .and_then(|i| self.decide(i, true)),
            Command::Select(id) => self.find(&id).map(|i| {
                self.selected = Some(i);
                self.entries
                    .get(i)
                    .map(|e| format!("selected #{} {}", e.id, e.req.line()))
                    .unwrap_or_default()
            }),
            Command::Routes => Ok(TableInfo::of(&self.session.table()).to_text()),
            Command::Reload => Ok(self.reload()),
            Command::Load(path) => Ok(self.load(&path)),
            Command::Relative(line) => self
                .absolute(&line)
                .and_then(|l| record::parse_adhoc(&l))
                .and_then(|r| self.typed_request(r)),
            Command::Request(req) => self.typed_request(*req),
            Command::Eval(expr) => self.eval(&expr),
        };
        Reply::Text(text.unwrap_or_else(|e| format!("error: {e}")))
    }

    /// `GET /path …` with the scheme and host of the selected (else the last) request.
    fn absolute(&self, line: &str) -> Result<String, String> {
        let base = self
            .selected
            .or_else(|| self.entries.len().checked_sub(1))
            .and_then(|i| self.entries.get(i))
            .ok_or("no host yet: type a whole URL first (GET http://host/path)")?;
        let host = base
            .req
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("host"))
            .map_or(base.req.host.as_str(), |(_, v)| v.as_str());
        let (method, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        Ok(format!(
            "{method} {}://{host}{}",
            base.req.scheme,
            rest.trim_start()
        ))
    }

    /// Adds and decides a typed request (its entrypoint must exist).
    fn typed_request(&mut self, req: RecordedRequest) -> Result<String, String> {
        let known = &self.session.env.entrypoints;
        if !known.contains(&req.entrypoint) {
            return Err(format!(
                "unknown entrypoint {:?} (known: {})",
                req.entrypoint,
                known.join(", ")
            ));
        }
        self.typed += 1;
        let id = format!("a{}", self.typed);
        self.entries.push(Entry { id, req });
        let i = self.entries.len().saturating_sub(1);
        self.decide(i, false)
    }

    fn list(&self, filter: &Option<Filter>) -> String {
        let kept: Vec<&Entry> = self.entries.iter().filter(|e| e.keep(filter)).collect();
        if kept.is_empty() {
            return match filter {
                None => "no requests: --requests FILE, :load FILE, or type one \
                         (GET http://host/path)"
                    .to_string(),
                Some(_) => "no request matches".to_string(),
            };
        }
        let mut out = String::new();
        for e in kept.iter().take(LIST_CAP) {
            let _ = writeln!(out, "{}", e.list_line());
        }
        if kept.len() > LIST_CAP {
            let _ = writeln!(
                out,
                "… {} more (narrow with :list FILTER)",
                kept.len() - LIST_CAP
            );
        }
        out
    }

    fn show(&self, i: usize) -> String {
        let Some(e) = self.entries.get(i) else {
            return String::new();
        };
        let r = &e.req;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "#{} {} {}://{}{}",
            e.id,
            r.method,
            r.scheme,
            r.host,
            r.target()
        );
        let _ = writeln!(out, "  time        {}", r.time);
        let _ = writeln!(out, "  entrypoint  {}", r.entrypoint);
        let _ = writeln!(out, "  client      {}", r.client);
        let _ = writeln!(out, "  headers");
        for (n, v) in &r.headers {
            let _ = writeln!(out, "    {n}: {v}");
        }
        if let Some(b) = &r.body {
            let _ = writeln!(
                out,
                "  body        {} bytes of base64{}",
                b.len(),
                if r.body_truncated { " (truncated)" } else { "" }
            );
        }
        if let Some(o) = &r.outcome {
            let _ = writeln!(out, "  recorded    {}", recorded_text(o));
        }
        out
    }

    /// Decides entry `i`, selects it and renders the decision (with the trace when `explain`).
    fn decide(&mut self, i: usize, explain: bool) -> Result<String, String> {
        let e = self.entries.get(i).ok_or("no such request")?;
        let d = self
            .rt
            .block_on(self.session.decide(&e.req, &mut self.clock))?;
        self.selected = Some(i);
        let mut out = format!("#{} {}\n", e.id, e.req.line());
        // The trace under `route`, as `replay --explain` prints it (always when nothing matched).
        out.push_str(&decision_text(&d, explain));
        if let Some(o) = &e.req.outcome {
            let _ = writeln!(out, "  recorded {}", recorded_text(o));
        }
        for line in differs_from_recording(&e.req, &d) {
            let _ = writeln!(out, "  DIFFERS {line}");
        }
        Ok(out)
    }

    fn eval(&mut self, expr: &str) -> Result<String, String> {
        let i = self.current(None)?;
        let e = self.entries.get(i).ok_or("no such request")?;
        let req = hook_request(&e.req)?;
        crate::script::eval_with_request_in(&mut self.vars, expr, req)
            .map_err(|err| render_all(&[err]))
    }

    /// Rebuilds the scripts; on failure the errors and the table kept.
    pub fn reload(&mut self) -> String {
        self.changed.store(false, Ordering::SeqCst);
        match self.session.reload() {
            Ok(()) => {
                let mut out = String::new();
                for w in &self.session.warnings {
                    let _ = writeln!(out, "warning: {w}");
                }
                let _ = write!(
                    out,
                    "scripts reloaded ({} routes)",
                    self.session.table().routes().len()
                );
                out
            }
            Err(errs) => format!(
                "{}\nkept the previous scripts ({} routes)",
                render_all(&errs),
                self.session.table().routes().len()
            ),
        }
    }
}

/// The request as a hook (and so an expression) sees it.
fn hook_request(r: &RecordedRequest) -> Result<HookRequest, String> {
    let dry = r.to_dry(None)?;
    Ok(HookRequest {
        method: dry.method,
        host: r.host.clone(),
        path: r.path.clone(),
        query: r.query.clone().unwrap_or_default(),
        headers: dry.headers,
        client_ip: canonical_ip(dry.client.ip()),
    })
}

fn help() -> String {
    let mut out = String::new();
    for (cmd, what) in COMMANDS {
        let _ = writeln!(out, "  {cmd:<16} {what}");
    }
    out.push_str(
        "  METHOD URL …     decide a typed request: GET http://api.x.com/v1 H:X-User=alice \
         C:10.0.0.1 (E:ENTRYPOINT, B:BODY); GET /path … uses the last request's host; quote \
         values with spaces: H:User-Agent=\"curl 8\"\n  anything else    a Rhai expression \
         with `req` bound to the selected request, e.g. req.header(\"user-agent\"); `let x = \
         …;` keeps x for later lines\n  help, ?          this list\n",
    );
    out
}

/// Completion, multi-line input and the rest of rustyline's hooks.
#[derive(Default)]
pub struct ReplHelper {
    pub ids: Vec<String>,
}

const TAKES_ID: &[&str] = &[":run ", ":show ", ":explain ", ":select ", ":r ", ":e "];

impl ReplHelper {
    /// (start, candidates) for the text before the cursor.
    pub fn candidates(&self, head: &str) -> (usize, Vec<String>) {
        if !head.contains(char::is_whitespace) {
            if head.starts_with(':') {
                let names = COMMANDS
                    .iter()
                    .filter_map(|(c, _)| c.split_whitespace().next())
                    .filter(|c| c.starts_with(head))
                    .map(str::to_string)
                    .collect();
                return (0, names);
            }
            if head.is_empty() {
                return (0, Vec::new());
            }
            return (0, self.ids_starting(head));
        }
        for cmd in TAKES_ID {
            if let Some(word) = head.strip_prefix(cmd) {
                if !word.contains(char::is_whitespace) {
                    return (cmd.len(), self.ids_starting(word));
                }
            }
        }
        (head.len(), Vec::new())
    }

    fn ids_starting(&self, word: &str) -> Vec<String> {
        self.ids
            .iter()
            .filter(|id| id.starts_with(word))
            .cloned()
            .collect()
    }
}

impl Completer for ReplHelper {
    type Candidate = String;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &rustyline::Context<'_>,
    ) -> rustyline::Result<(usize, Vec<String>)> {
        Ok(self.candidates(line.get(..pos).unwrap_or(line)))
    }
}

impl Hinter for ReplHelper {
    type Hint = String;
}

impl Highlighter for ReplHelper {}

impl Validator for ReplHelper {
    fn validate(&self, ctx: &mut ValidationContext<'_>) -> rustyline::Result<ValidationResult> {
        Ok(if incomplete(ctx.input()) {
            ValidationResult::Incomplete
        } else {
            ValidationResult::Valid(None)
        })
    }
}

impl Helper for ReplHelper {}

/// `$XDG_STATE_HOME/switchyard/history`, else `$HOME/.switchyard_history`.
fn history_path() -> Option<PathBuf> {
    let nonempty = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(state) = nonempty("XDG_STATE_HOME") {
        let dir = PathBuf::from(state).join("switchyard");
        let _ = std::fs::create_dir_all(&dir);
        return Some(dir.join("history"));
    }
    nonempty("HOME").map(|h| PathBuf::from(h).join(".switchyard_history"))
}

/// Sets `changed` whenever a file in `dir` is created, written, renamed or removed.
fn watch(dir: &Path, changed: Arc<AtomicBool>) -> notify::Result<notify::RecommendedWatcher> {
    use notify::{EventKind, RecursiveMode, Watcher};
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res {
            if !matches!(ev.kind, EventKind::Access(_)) {
                changed.store(true, Ordering::SeqCst);
            }
        }
    })?;
    watcher.watch(dir, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}

fn print_reply(text: &str) {
    if text.is_empty() {
        return;
    }
    if text.ends_with('\n') {
        print!("{text}");
    } else {
        println!("{text}");
    }
}

/// `switchyard repl`. Returns the exit code: 0, or 1 when the scripts do not build at start or
/// the terminal fails.
pub fn run(cfg: &Config, requests: Option<&Path>) -> i32 {
    let session = match Session::load(cfg) {
        Ok(s) => s,
        Err(errs) => {
            eprintln!("{}", render_all(&errs));
            return 1;
        }
    };
    for w in &session.warnings {
        eprintln!("warning: {w}");
    }
    let mut repl = match Repl::new(session) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e:#}");
            return 1;
        }
    };
    let routes = repl.session().table().routes().len();
    let origin = repl.session().scripts_dir().map_or_else(
        || "the embedded default".to_string(),
        |d| d.display().to_string(),
    );
    println!("switchyard repl: {routes} routes from {origin}");
    if let Some(path) = requests {
        print_reply(&repl.load(path));
    }
    println!(":help lists the commands");
    // Kept alive for the whole loop; without a folder (embedded scripts) there is nothing to watch.
    let _watcher = repl.session().scripts_dir().and_then(|d| {
        watch(&d, repl.changed.clone())
            .map_err(|e| eprintln!("warning: not watching {}: {e}", d.display()))
            .ok()
    });
    let config = rustyline::Config::builder().auto_add_history(true).build();
    let mut editor: Editor<ReplHelper, DefaultHistory> = match Editor::with_config(config) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: cannot start the line editor: {e}");
            return 1;
        }
    };
    editor.set_helper(Some(ReplHelper::default()));
    let history = history_path();
    if let Some(h) = &history {
        let _ = editor.load_history(h);
    }
    let code = loop {
        if let Some(h) = editor.helper_mut() {
            h.ids = repl.ids();
        }
        let line = match editor.readline(PROMPT) {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break 0,
            Err(e) => {
                eprintln!("error: {e}");
                break 1;
            }
        };
        if repl.changed.load(Ordering::SeqCst) {
            print_reply(&repl.reload());
        }
        match parse_command(&line) {
            Ok(cmd) => match repl.execute(cmd) {
                Reply::Quit => break 0,
                Reply::Text(t) => print_reply(&t),
            },
            Err(e) => println!("error: {e}"),
        }
    };
    if let Some(h) = &history {
        let _ = editor.save_history(h);
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse() {
        let cases: &[(&str, Command)] = &[
            ("", Command::Empty),
            ("  :help ", Command::Help),
            (":list", Command::List(None)),
            (
                ":list route=api",
                Command::List(Some(Filter::Route("api".into()))),
            ),
            (":list status=404", Command::List(Some(Filter::Status(404)))),
            (
                ":list /v1 users",
                Command::List(Some(Filter::Text("/v1 users".into()))),
            ),
            (":show #3", Command::Show("3".into())),
            (":run 12", Command::Run("12".into())),
            ("12", Command::Run("12".into())),
            ("#2", Command::Run("2".into())),
            ("a1", Command::Run("a1".into())),
            (":explain", Command::Explain(None)),
            (":explain a2", Command::Explain(Some("a2".into()))),
            (":select 4", Command::Select("4".into())),
            (":routes", Command::Routes),
            (":reload", Command::Reload),
            (":load rec.jsonl", Command::Load("rec.jsonl".into())),
            (":quit", Command::Quit),
            (":q", Command::Quit),
            ("req.path", Command::Eval("req.path".into())),
            (
                "req.header(\"user-agent\")",
                Command::Eval("req.header(\"user-agent\")".into()),
            ),
            ("1 + 2", Command::Eval("1 + 2".into())),
            ("GET", Command::Eval("GET".into())),
        ];
        for (line, want) in cases {
            assert_eq!(&parse_command(line).unwrap(), want, "{line:?}");
        }
    }

    #[test]
    fn command_errors() {
        for (line, want) in [
            (":run", ":run needs a request id"),
            (":run x", "is not a request id"),
            (":routes now", ":routes takes no argument"),
            (":list status=abc", "not a status code"),
            (":frobnicate", "unknown command :frobnicate"),
            (":load", ":load needs a file"),
            ("GET http:// x", "invalid URL"),
        ] {
            let err = parse_command(line).unwrap_err();
            assert!(err.contains(want), "{line:?}: {err}");
        }
    }

    #[test]
    fn adhoc_requests_parse() {
        let Command::Request(r) = parse_command(
            "GET http://API.x.com:8080/v1/users?page=2 H:X-User=alice H:User-Agent=\"curl 8\" \
             C:10.1.2.3 B:hello",
        )
        .unwrap() else {
            panic!("not a request");
        };
        assert_eq!(r.method, "GET");
        assert_eq!(r.host, "api.x.com");
        assert_eq!(r.target(), "/v1/users?page=2");
        assert_eq!(r.header("host"), Some("API.x.com:8080"));
        assert_eq!(r.header("x-user"), Some("alice"));
        assert_eq!(r.header("user-agent"), Some("curl 8"));
        assert_eq!(r.client, "10.1.2.3:0");
        assert_eq!(r.entrypoint, "web");
        assert!(r.body.is_some());
        let dry = r.to_dry(None).unwrap();
        assert_eq!(dry.uri, "/v1/users?page=2");

        let r =
            record::parse_adhoc("POST https://x.com C:[::1]:99 E:websecure H:Host=y.com").unwrap();
        assert_eq!(r.scheme, "https");
        assert_eq!(r.path, "/");
        assert_eq!(r.client, "[::1]:99");
        assert_eq!(r.entrypoint, "websecure");
        assert_eq!(r.headers, vec![("Host".to_string(), "y.com".to_string())]);
    }

    #[test]
    fn adhoc_errors() {
        for (line, want) in [
            ("GET /relative", "is not an absolute URL"),
            ("GET http://x.com H:novalue", "a header is H:Name=Value"),
            ("GET http://x.com H:=v", "has no name"),
            ("GET http://x.com C:nowhere", "the client is C:IP"),
            ("GET http://x.com extra", "unexpected \"extra\""),
            ("GET http://x.com H:A=\"b", "unclosed"),
            ("get http://x.com", "is not a method"),
        ] {
            let err = record::parse_adhoc(line).unwrap_err();
            assert!(err.contains(want), "{line:?}: {err}");
        }
    }

    #[test]
    fn open_brackets_continue_the_input() {
        assert!(incomplete("if req.path == \"/\" {"));
        assert!(incomplete("req.header("));
        assert!(incomplete("[1, 2,"));
        assert!(incomplete("`a multi-line"));
        assert!(!incomplete("req.header(\"(\")"));
        assert!(!incomplete("req.path"));
        assert!(!incomplete("\"\\\"(\""));
        assert!(!incomplete(":list ("));
        assert!(!incomplete("GET http://x.com/( "));
        assert!(!incomplete("x)"));
    }

    #[test]
    fn completes_commands_and_ids() {
        let h = ReplHelper {
            ids: vec!["1".into(), "12".into(), "2".into(), "a1".into()],
        };
        let (start, c) = h.candidates(":ru");
        assert_eq!((start, c), (0, vec![":run".to_string()]));
        let (_, c) = h.candidates(":re");
        assert_eq!(c, vec![":reload".to_string()]);
        let (start, c) = h.candidates(":run 1");
        assert_eq!((start, c), (5, vec!["1".to_string(), "12".to_string()]));
        let (start, c) = h.candidates(":explain a");
        assert_eq!((start, c), (9, vec!["a1".to_string()]));
        let (_, c) = h.candidates("req.pa");
        assert!(c.is_empty());
        let (_, c) = h.candidates(":list 1");
        assert!(c.is_empty());
    }
}
