//! Constraint expressions over container labels (`--docker.constraints`), in Traefik's language:
//! ``Label(`key`, `value`)``, ``LabelRegex(`key`, `regex`)``, `&&`, `||`, `!` and parentheses.
//! Strings are quoted with backticks or double quotes.
//!
//! Owns parsing (once, at start: errors carry the 1-based column) and evaluation (pure, no
//! allocation). Invariants: `&&` binds tighter than `||`; a label that is absent matches nothing;
//! `LabelRegex` is unanchored like Go's `regexp.MatchString` (write `^...$` to anchor). Must never:
//! read anything but the labels it is given.

use std::collections::BTreeMap;

use regex::Regex;

/// A parsed constraint expression.
#[derive(Debug, Clone)]
pub enum Constraint {
    Label(String, String),
    LabelRegex(String, Regex),
    Not(Box<Constraint>),
    And(Box<Constraint>, Box<Constraint>),
    Or(Box<Constraint>, Box<Constraint>),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("constraints {expr:?}, column {column}: {message}")]
pub struct ConstraintError {
    pub expr: String,
    /// 1-based column (in characters) where the problem is.
    pub column: usize,
    pub message: String,
}

impl Constraint {
    /// Parses a whole expression; trailing input is an error.
    pub fn parse(expr: &str) -> Result<Constraint, ConstraintError> {
        let mut p = Parser {
            chars: expr.chars().collect(),
            pos: 0,
            depth: 0,
        };
        let out = p.or().map_err(|(column, message)| ConstraintError {
            expr: expr.to_string(),
            column,
            message,
        })?;
        p.skip_ws();
        if p.pos < p.chars.len() {
            return Err(ConstraintError {
                expr: expr.to_string(),
                column: p.pos + 1,
                message: "unexpected input after the expression (missing && or ||?)".into(),
            });
        }
        Ok(out)
    }

    /// Whether `labels` satisfy the expression.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Constraint::Label(k, v) => labels.get(k).is_some_and(|x| x == v),
            Constraint::LabelRegex(k, re) => labels.get(k).is_some_and(|x| re.is_match(x)),
            Constraint::Not(c) => !c.matches(labels),
            Constraint::And(a, b) => a.matches(labels) && b.matches(labels),
            Constraint::Or(a, b) => a.matches(labels) || b.matches(labels),
        }
    }
}

/// Nesting deeper than this is refused (keeps recursion bounded on hostile input).
const MAX_DEPTH: usize = 64;

type PResult<T> = Result<T, (usize, String)>;

struct Parser {
    chars: Vec<char>,
    pos: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    /// Consumes `tok` (after whitespace) when it is next.
    fn eat(&mut self, tok: &str) -> bool {
        self.skip_ws();
        let n = tok.chars().count();
        let next: String = self.chars.iter().skip(self.pos).take(n).collect();
        if next == tok {
            self.pos += n;
            true
        } else {
            false
        }
    }

    fn err<T>(&self, message: impl Into<String>) -> PResult<T> {
        Err((self.pos + 1, message.into()))
    }

    fn or(&mut self) -> PResult<Constraint> {
        let mut left = self.and()?;
        while self.eat("||") {
            let right = self.and()?;
            left = Constraint::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> PResult<Constraint> {
        let mut left = self.unary()?;
        while self.eat("&&") {
            let right = self.unary()?;
            left = Constraint::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> PResult<Constraint> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.err(format!("nested deeper than {MAX_DEPTH} levels"));
        }
        let out = if self.eat("!") {
            self.unary().map(|c| Constraint::Not(Box::new(c)))
        } else if self.eat("(") {
            let inner = self.or()?;
            if !self.eat(")") {
                return self.err("expected `)`");
            }
            Ok(inner)
        } else {
            self.call()
        };
        self.depth -= 1;
        out
    }

    fn call(&mut self) -> PResult<Constraint> {
        self.skip_ws();
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_alphanumeric()) {
            self.pos += 1;
        }
        let name: String = self
            .chars
            .iter()
            .skip(start)
            .take(self.pos - start)
            .collect();
        if name.is_empty() {
            return self.err("expected Label(...), LabelRegex(...), `!` or `(`");
        }
        if name != "Label" && name != "LabelRegex" {
            return Err((
                start + 1,
                format!("unknown function {name:?} (use Label or LabelRegex)"),
            ));
        }
        if !self.eat("(") {
            return self.err(format!("expected `(` after {name}"));
        }
        let key = self.string()?;
        if !self.eat(",") {
            return self.err(format!("{name} takes two arguments: expected `,`"));
        }
        let value_at = {
            self.skip_ws();
            self.pos + 1
        };
        let value = self.string()?;
        if !self.eat(")") {
            return self.err(format!("{name} takes two arguments: expected `)`"));
        }
        if name == "Label" {
            Ok(Constraint::Label(key, value))
        } else {
            Regex::new(&value)
                .map(|re| Constraint::LabelRegex(key, re))
                .map_err(|e| (value_at, format!("invalid regex: {e}")))
        }
    }

    fn string(&mut self) -> PResult<String> {
        self.skip_ws();
        let quote = match self.peek() {
            Some(q @ ('`' | '"')) => q,
            _ => return self.err("expected a string in backticks or double quotes"),
        };
        let open = self.pos;
        self.pos += 1;
        let mut out = String::new();
        loop {
            match self.peek() {
                None => return Err((open + 1, "unterminated string".into())),
                Some(c) if c == quote => {
                    self.pos += 1;
                    return Ok(out);
                }
                // Double-quoted strings take `\"` and `\\` escapes (Go's strconv.Unquote subset).
                Some('\\') if quote == '"' => {
                    self.pos += 1;
                    match self.peek() {
                        Some(c) => out.push(c),
                        None => return Err((open + 1, "unterminated string".into())),
                    }
                    self.pos += 1;
                }
                Some(c) => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn eval(expr: &str, pairs: &[(&str, &str)]) -> bool {
        Constraint::parse(expr).unwrap().matches(&labels(pairs))
    }

    #[test]
    fn label_and_regex() {
        assert!(eval("Label(`a`, `1`)", &[("a", "1")]));
        assert!(!eval("Label(`a`, `1`)", &[("a", "2")]));
        assert!(!eval("Label(`a`, `1`)", &[]));
        assert!(eval(r#"Label("a","1")"#, &[("a", "1")]));
        assert!(eval(
            "LabelRegex(`env`, `^prod|staging$`)",
            &[("env", "prod")]
        ));
        assert!(
            eval("LabelRegex(`env`, `ro`)", &[("env", "prod")]),
            "unanchored"
        );
        assert!(!eval("LabelRegex(`env`, `^x`)", &[("env", "prod")]));
    }

    #[test]
    fn operators_and_precedence() {
        let l = &[("a", "1"), ("b", "2")];
        assert!(eval("Label(`a`,`1`) && Label(`b`,`2`)", l));
        assert!(!eval("Label(`a`,`1`) && !Label(`b`,`2`)", l));
        assert!(eval("Label(`a`,`x`) || Label(`b`,`2`)", l));
        // && binds tighter: false || (true && true)
        assert!(eval(
            "Label(`a`,`x`) || Label(`a`,`1`) && Label(`b`,`2`)",
            l
        ));
        // (false || true) && false
        assert!(!eval(
            "(Label(`a`,`x`) || Label(`a`,`1`)) && Label(`b`,`x`)",
            l
        ));
        assert!(eval("!!Label(`a`,`1`)", l));
        assert!(eval("!(Label(`a`,`x`))", l));
    }

    #[test]
    fn errors_name_the_column() {
        let cases = [
            ("Label(`a`)", 10, "two arguments"),
            ("Lable(`a`,`b`)", 1, "unknown function \"Lable\""),
            ("Label(`a`,`b`) Label(`c`,`d`)", 16, "unexpected input"),
            ("Label(`a`,`b", 11, "unterminated"),
            ("(Label(`a`,`b`)", 16, "expected `)`"),
            ("LabelRegex(`a`, `(`)", 17, "invalid regex"),
            ("", 1, "expected Label"),
            ("Label(a, `b`)", 7, "expected a string"),
            ("Label(`a`,`b`) &&", 18, "expected Label"),
        ];
        for (expr, column, text) in cases {
            let e = Constraint::parse(expr).unwrap_err();
            assert_eq!(e.column, column, "{expr}: {e}");
            assert!(e.to_string().contains(text), "{expr}: {e}");
        }
    }

    #[test]
    fn depth_is_bounded() {
        let deep = format!("{}Label(`a`,`b`)", "!".repeat(1000));
        assert!(Constraint::parse(&deep)
            .unwrap_err()
            .message
            .contains("nested"));
    }
}
