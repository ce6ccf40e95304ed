//! Script errors as users see them: `scripts/api.rhai:12:5: message`, the source line and a caret.
//!
//! Owns turning Rhai parse/runtime errors and build-time validation failures into `ScriptError`s
//! with a file, a 1-based line and column, and the offending source line. Never loses the
//! message: when Rhai gives no position, the error still names the file.

use std::fmt;
use std::sync::OnceLock;

use rhai::{Engine, EvalAltResult, ParseError, Position};
use serde::Serialize;

use crate::routing::Location;

/// One error found while building the scripts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScriptError {
    pub file: String,
    /// 1-based; 0 when the error has no position (e.g. an unreadable file).
    pub line: usize,
    pub column: usize,
    pub message: String,
    /// The source line the position points into, when known.
    pub source_line: Option<String>,
}

impl ScriptError {
    /// The catalog could not be read: reported like a build error, without a position.
    pub fn catalog(e: &anyhow::Error) -> Self {
        ScriptError {
            file: "catalog".to_string(),
            line: 0,
            column: 0,
            message: format!("{e:#}"),
            source_line: None,
        }
    }

    pub fn new(file: &str, pos: Position, message: impl Into<String>) -> Self {
        ScriptError {
            file: file.to_string(),
            line: pos.line().unwrap_or(0),
            column: pos.position().unwrap_or(0),
            message: message.into(),
            source_line: None,
        }
    }

    pub fn at(loc: &Location, message: impl Into<String>) -> Self {
        ScriptError {
            file: loc.file.clone(),
            line: loc.line,
            column: loc.column,
            message: message.into(),
            source_line: None,
        }
    }

    pub fn from_parse(file: &str, err: &ParseError) -> Self {
        ScriptError::new(file, err.1, err.0.to_string())
    }

    /// Uses the innermost position in `file` (where the failing call stands) and a message
    /// without Rhai's own position suffix.
    pub fn from_eval(file: &str, err: &EvalAltResult) -> Self {
        let mut pos = err.position();
        let mut cur = err;
        let mut chain = Vec::new();
        let mut inside = true;
        loop {
            let (name, source, inner) = match cur {
                EvalAltResult::ErrorInFunctionCall(name, source, inner, _) => {
                    (name, source.as_str(), inner)
                }
                EvalAltResult::ErrorInModule(name, inner, _) => (name, "", inner),
                _ => break,
            };
            chain.push(name.clone());
            cur = inner;
            // Only positions inside this same file are useful to the reader of `file`.
            inside &= source.is_empty() || source == file;
            if inside && !cur.position().is_none() {
                pos = cur.position();
            }
        }
        let mut message = message_of(cur);
        if !chain.is_empty() {
            message.push_str(&format!(" (in call to {})", chain.join(" → ")));
        }
        ScriptError::new(file, pos, message)
    }

    /// Fills `source_line` from the file's text.
    pub fn with_source(mut self, source: &str) -> Self {
        if self.line > 0 {
            self.source_line = source.lines().nth(self.line - 1).map(str::to_string);
        }
        self
    }
}

/// Names of every function scripts can call (the script API and Rhai's standard library),
/// learnt from the first build engine, for "did you mean" suggestions.
static KNOWN_FUNCTIONS: OnceLock<Vec<String>> = OnceLock::new();

/// Records the functions `engine` offers (once per process; later calls do nothing).
pub fn learn_function_names(engine: &Engine) {
    KNOWN_FUNCTIONS.get_or_init(|| {
        let mut names: Vec<String> = engine
            .gen_fn_signatures(true)
            .iter()
            .filter_map(|sig| sig.split('(').next())
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty() && !n.starts_with("get$") && !n.starts_with("set$"))
            .collect();
        names.sort();
        names.dedup();
        names
    });
}

/// Rhai's parameter type names as a script author knows them.
fn plain_types(types: &str) -> String {
    types
        .split(", ")
        .map(|t| match t.trim() {
            t if t.contains("ImmutableString") || t == "&str" || t == "String" => "string",
            "i64" => "int",
            "f64" => "float",
            "bool" => "bool",
            "()" => "()",
            "Array" => "array",
            "Map" => "map",
            "FnPtr" => "function",
            other => other.rsplit("::").next().unwrap_or(other),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// "unknown function `strip_prefx` (did you mean `strip_prefix`?)", or, for a known name
/// called with arguments it does not take, "`to` does not take (Route, int)".
fn function_not_found(signature: &str) -> String {
    let (name, types) = match signature.split_once(" (") {
        Some((n, rest)) => (n.trim(), rest.trim_end_matches(')')),
        None => (signature.trim(), ""),
    };
    let known = KNOWN_FUNCTIONS.get().map(Vec::as_slice).unwrap_or_default();
    if known.iter().any(|k| k == name) {
        return format!("`{name}` does not take ({})", plain_types(types));
    }
    let mut message = format!("unknown function `{name}`");
    if let Some(best) = crate::routing::rule::closest(name, known.iter().map(String::as_str)) {
        message.push_str(&format!(" (did you mean `{best}`?)"));
    }
    message
}

fn message_of(err: &EvalAltResult) -> String {
    match err {
        EvalAltResult::ErrorFunctionNotFound(signature, _) => function_not_found(signature),
        EvalAltResult::ErrorRuntime(value, _) => value.to_string(),
        EvalAltResult::ErrorTooManyOperations(_) => {
            "script exceeded its operations budget (an endless loop?)".to_string()
        }
        EvalAltResult::ErrorTerminated(_, _) => "script exceeded its time budget".to_string(),
        other => {
            let text = other.to_string();
            // Rhai appends " (line L, position C)"; the position is reported separately.
            match text.rfind(" (line ") {
                Some(i) if text.ends_with(')') => text[..i].to_string(),
                _ => text,
            }
        }
    }
}

impl fmt::Display for ScriptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            return write!(f, "{}: {}", self.file, self.message);
        }
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )?;
        if let Some(src) = &self.source_line {
            let caret_pad: String = src
                .chars()
                .take(self.column.saturating_sub(1))
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            write!(f, "\n  {src}\n  {caret_pad}^")?;
        }
        Ok(())
    }
}

impl std::error::Error for ScriptError {}

/// Formats a list of errors one after the other, as `check` and the log print them.
pub fn render_all(errors: &[ScriptError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_functions_are_named_plainly_with_a_suggestion() {
        let engine = crate::script::engine_with_limits(&crate::script::Limits::default(), 1000);
        learn_function_names(&engine);
        assert_eq!(
            function_not_found("path_prefx (&str | ImmutableString | String)"),
            "unknown function `path_prefx` (did you mean `path_prefix`?)"
        );
        assert_eq!(
            function_not_found("zzzzzzz (i64)"),
            "unknown function `zzzzzzz`"
        );
        assert_eq!(
            function_not_found("path_prefix (i64, bool)"),
            "`path_prefix` does not take (int, bool)"
        );
    }

    #[test]
    fn caret_points_at_column() {
        let e = ScriptError {
            file: "scripts/a.rhai".into(),
            line: 2,
            column: 5,
            message: "boom".into(),
            source_line: None,
        }
        .with_source("let a = 1;\nlet b = ;\n");
        assert_eq!(
            e.to_string(),
            "scripts/a.rhai:2:5: boom\n  let b = ;\n      ^"
        );
    }
}
