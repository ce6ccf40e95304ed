//! Traefik rule parsing: turns a router rule such as ``Host(`a.com`) && PathPrefix(`/api`)`` into
//! a [`Matcher`] tree, in either Traefik's v3 syntax (the default) or its legacy v2 syntax.
//!
//! Owns the rule grammar (a hand-written recursive-descent parser over Go-style string literals),
//! argument validation for every Traefik HTTP matcher, and the translation of v2 gorilla/mux
//! templates (`{name}` / `{name:regexp}`) into anchored regexes. The result uses only the
//! `Matcher` variants of `matcher.rs`, so a v2 rule and its v3 rewrite evaluate identically and
//! print the same canonical (v3) form.
//!
//! Grammar (whitespace, including newlines, is allowed between any two tokens):
//!
//! ```text
//! rule    := or EOF
//! or      := and ( "||" and )*
//! and     := unary ( "&&" unary )*
//! unary   := "!" unary | primary
//! primary := "(" or ")" | NAME "(" [ STRING ( "," STRING )* [ "," ] ] ")"
//! STRING  := `raw` | "interpreted, with Go escapes"
//! ```
//!
//! Traefik behaviour kept (pkg/rules/parser.go, pkg/muxer/http/matcher.go, matcher_v2.go and
//! gorilla/mux regexp.go): matcher names may be written as spelled, lowercase, UPPERCASE or
//! Capitalised (`Hostregexp`); empty arguments are rejected; v3 regexes are unanchored; v3
//! `Query(`k`)` matches a parameter with an empty value (`?k`); v2 multi-value matchers are ORed
//! except `Headers`, `HeadersRegexp` and `Query`, whose pairs must all match. Deliberate
//! differences: newlines are plain whitespace, host regexes ignore case (request hosts are
//! lowercase anyway), `Host(`*.x.com`)` is a wildcard in both syntaxes, methods, header names
//! and IPs are validated, and a v2 query value is checked against every value of its key, not only the first.
//!
//! Invariants: a returned error's `column` is 1-based, counted in chars, and lies within
//! `1..=chars + 1`; parentheses and `!` nest at most 64 levels (`MAX_DEPTH`) and a rule holds
//! at most 512 leaf matchers (`MAX_MATCHERS`), so the parser and every recursive walk of the
//! resulting tree (display, evaluation, drop) have a bounded stack depth.
//! Must never: panic on any input (no indexing, no unwrap on input-dependent values), recurse
//! without bound, evaluate requests, or perform I/O.

use std::borrow::Cow;
use std::net::IpAddr;
use std::str::FromStr;

use http::{HeaderName, Method};
use ipnet::{IpNet, Ipv4Net};

use super::matcher::{HostPattern, Matcher, Pattern};

/// Maximum nesting of parentheses and `!` operators.
const MAX_DEPTH: usize = 64;

/// Maximum number of leaf matchers in one rule (after expanding v2 multi-argument matchers).
/// Keeps the left-leaning `&&`/`||` chains shallow enough for recursive walks on 2 MiB thread
/// stacks: `Display` of an unoptimised build needs about 2.3 KiB per level (overflowing near 900),
/// an optimised one far less.
const MAX_MATCHERS: usize = 512;

/// Which Traefik rule syntax a rule is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RuleSyntax {
    /// Traefik v3: one value per matcher (two for `Header*`/`Query*`), Go regexes.
    #[default]
    V3,
    /// Traefik v2: multi-value matchers ORed together, gorilla/mux `{name:regexp}` templates.
    V2,
}

impl RuleSyntax {
    fn label(self) -> &'static str {
        match self {
            RuleSyntax::V3 => "v3",
            RuleSyntax::V2 => "v2",
        }
    }

    fn other(self) -> RuleSyntax {
        match self {
            RuleSyntax::V3 => RuleSyntax::V2,
            RuleSyntax::V2 => RuleSyntax::V3,
        }
    }
}

impl FromStr for RuleSyntax {
    type Err = String;

    /// Accepts `v3` or `v2`, case-insensitively (surrounding whitespace is ignored).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("v3") {
            Ok(RuleSyntax::V3)
        } else if t.eq_ignore_ascii_case("v2") {
            Ok(RuleSyntax::V2)
        } else {
            Err(format!(
                "unknown rule syntax {s:?}: expected \"v3\" or \"v2\""
            ))
        }
    }
}

/// A rule that could not be parsed, with the 1-based column (in chars) of the offending spot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid rule at column {column}: {message}")]
pub struct RuleError {
    pub column: usize,
    pub message: String,
}

/// Parses a Traefik router rule written in `syntax` into a matcher tree.
///
/// Never panics; every failure is a [`RuleError`] pointing at the offending column.
pub fn parse_rule(input: &str, syntax: RuleSyntax) -> Result<Matcher, RuleError> {
    let mut p = Parser {
        src: input,
        pos: 0,
        peeked: None,
        syntax,
        tcp: false,
        depth: 0,
        leaves: 0,
    };
    p.parse_all()
}

/// Parses a Traefik TCP router rule (``HostSNI(`db.example.com`)``, `HostSNIRegexp`,
/// `ClientIP`, `ALPN`, combined with `&&`, `||`, `!` and parentheses) into a matcher tree of
/// `Always` (``HostSNI(`*`)``), `Host`/`HostRegex` (matched against the SNI name), `ClientIp`
/// and `Alpn`. HTTP matchers are refused with a hint.
pub fn parse_tcp_rule(input: &str, syntax: RuleSyntax) -> Result<Matcher, RuleError> {
    let mut p = Parser {
        src: input,
        pos: 0,
        peeked: None,
        syntax,
        tcp: true,
        depth: 0,
        leaves: 0,
    };
    p.parse_all()
}

impl Parser<'_> {
    fn parse_all(&mut self) -> Result<Matcher, RuleError> {
        let p = self;
        if p.peek()?.0 == Tok::Eof {
            return Err(p.err(0, "empty rule"));
        }
        let rule = p.parse_or()?;
        match p.peek()? {
            (Tok::Eof, _) => Ok(rule),
            (Tok::RParen, pos) => Err(p.err(pos, "unexpected \")\" without a matching \"(\"")),
            (tok, pos) => Err(p.err(
                pos,
                format!("unexpected {}, expected \"&&\" or \"||\"", tok.describe()),
            )),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Matchers known to each syntax
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Func {
    Host,
    HostHeader,
    HostRegexp,
    Path,
    PathPrefix,
    PathRegexp,
    Method,
    Header,
    HeaderRegexp,
    Headers,
    HeadersRegexp,
    Query,
    QueryRegexp,
    ClientIp,
    HostSni,
    HostSniRegexp,
    Alpn,
}

const TCP_FUNCS: &[Func] = &[
    Func::HostSni,
    Func::HostSniRegexp,
    Func::ClientIp,
    Func::Alpn,
];
const TCP_V2_FUNCS: &[Func] = &[Func::HostSni, Func::HostSniRegexp, Func::ClientIp];

const V3_FUNCS: &[Func] = &[
    Func::Host,
    Func::HostRegexp,
    Func::Path,
    Func::PathPrefix,
    Func::PathRegexp,
    Func::Method,
    Func::Header,
    Func::HeaderRegexp,
    Func::Query,
    Func::QueryRegexp,
    Func::ClientIp,
];

const V2_FUNCS: &[Func] = &[
    Func::Host,
    Func::HostHeader,
    Func::HostRegexp,
    Func::Path,
    Func::PathPrefix,
    Func::Method,
    Func::Headers,
    Func::HeadersRegexp,
    Func::Query,
    Func::ClientIp,
];

impl Func {
    fn name(self) -> &'static str {
        match self {
            Func::Host => "Host",
            Func::HostHeader => "HostHeader",
            Func::HostRegexp => "HostRegexp",
            Func::Path => "Path",
            Func::PathPrefix => "PathPrefix",
            Func::PathRegexp => "PathRegexp",
            Func::Method => "Method",
            Func::Header => "Header",
            Func::HeaderRegexp => "HeaderRegexp",
            Func::Headers => "Headers",
            Func::HeadersRegexp => "HeadersRegexp",
            Func::Query => "Query",
            Func::QueryRegexp => "QueryRegexp",
            Func::ClientIp => "ClientIP",
            Func::HostSni => "HostSNI",
            Func::HostSniRegexp => "HostSNIRegexp",
            Func::Alpn => "ALPN",
        }
    }

    fn all_for(syntax: RuleSyntax, tcp: bool) -> &'static [Func] {
        match (tcp, syntax) {
            (false, s) => Func::all(s),
            (true, RuleSyntax::V3) => TCP_FUNCS,
            (true, RuleSyntax::V2) => TCP_V2_FUNCS,
        }
    }

    fn all(syntax: RuleSyntax) -> &'static [Func] {
        match syntax {
            RuleSyntax::V3 => V3_FUNCS,
            RuleSyntax::V2 => V2_FUNCS,
        }
    }

    /// Finds a matcher by name the way Traefik's parser does: the canonical spelling, all
    /// lowercase, all uppercase, or capitalised (`Host`, `host`, `HOST`, `Hostregexp`).
    fn lookup(name: &str, syntax: RuleSyntax) -> Option<Func> {
        Func::all(syntax)
            .iter()
            .copied()
            .find(|f| name_matches(name, f.name()))
    }

    /// The same matcher under its name in the other syntax, if it has one.
    fn counterpart(self, target: RuleSyntax) -> Option<Func> {
        match (self, target) {
            (Func::HostHeader, RuleSyntax::V3) => Some(Func::Host),
            (Func::Headers, RuleSyntax::V3) => Some(Func::Header),
            (Func::HeadersRegexp, RuleSyntax::V3) => Some(Func::HeaderRegexp),
            (Func::Header, RuleSyntax::V2) => Some(Func::Headers),
            (Func::HeaderRegexp, RuleSyntax::V2) => Some(Func::HeadersRegexp),
            _ => None,
        }
    }
}

fn name_matches(written: &str, canonical: &str) -> bool {
    if written == canonical {
        return true;
    }
    if !written.eq_ignore_ascii_case(canonical) {
        return false;
    }
    let lower = written.bytes().all(|b| b.is_ascii_lowercase());
    let upper = written.bytes().all(|b| b.is_ascii_uppercase());
    let mut bytes = written.bytes();
    let capitalised = bytes.next().is_some_and(|b| b.is_ascii_uppercase())
        && bytes.all(|b| b.is_ascii_lowercase());
    lower || upper || capitalised
}

fn unknown_matcher_message(name: &str, syntax: RuleSyntax) -> String {
    let mut msg = format!("unknown matcher {name:?}");
    let own = Func::all(syntax);
    let other = syntax.other();
    if let Some(f) = own.iter().find(|f| f.name().eq_ignore_ascii_case(name)) {
        msg.push_str(&format!(" (did you mean {:?}?)", f.name()));
    } else if let Some(f) = Func::all(other)
        .iter()
        .find(|f| f.name().eq_ignore_ascii_case(name))
    {
        match f.counterpart(syntax) {
            Some(eq) => msg.push_str(&format!(
                " ({} is {} syntax; in {} syntax use {})",
                f.name(),
                other.label(),
                syntax.label(),
                eq.name()
            )),
            None => msg.push_str(&format!(
                " ({} only exists in {} syntax)",
                f.name(),
                other.label()
            )),
        }
    } else if let Some(f) = closest_name(name, own) {
        msg.push_str(&format!(" (did you mean {:?}?)", f.name()));
    }
    msg
}

fn unknown_tcp_matcher_message(name: &str) -> String {
    let mut msg = format!("unknown TCP matcher {name:?}");
    if let Some(f) = closest_name(name, TCP_FUNCS) {
        msg.push_str(&format!(" (did you mean {:?}?)", f.name()));
    } else if Func::all(RuleSyntax::V3)
        .iter()
        .chain(Func::all(RuleSyntax::V2))
        .any(|f| f.name().eq_ignore_ascii_case(name))
    {
        msg.push_str(
            " (an HTTP matcher; a TCP rule has HostSNI, HostSNIRegexp, ClientIP and ALPN)",
        );
    }
    msg
}

/// The candidate within edit distance 2 of `name` (case-insensitively), the closest first; for
/// "did you mean" hints.
pub fn closest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    if name.chars().count() > 32 {
        return None;
    }
    let lower: Vec<char> = name.chars().flat_map(char::to_lowercase).collect();
    candidates
        .map(|c| {
            let cand: Vec<char> = c.chars().flat_map(char::to_lowercase).collect();
            (edit_distance(&lower, &cand), c)
        })
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// The matcher whose name is within edit distance 2 of `name` (case-insensitively), if any.
fn closest_name(name: &str, funcs: &[Func]) -> Option<Func> {
    let best = closest(name, funcs.iter().map(|f| f.name()))?;
    funcs.iter().find(|f| f.name() == best).copied()
}

fn edit_distance(a: &[char], b: &[char]) -> usize {
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        let mut row = cur.iter_mut();
        if let Some(first) = row.next() {
            *first = i + 1;
        }
        let mut left = i + 1;
        for ((cell, cb), (diag, up)) in row.zip(b).zip(prev.iter().zip(prev.iter().skip(1))) {
            let cost = usize::from(ca != cb);
            let best = (diag + cost).min(up + 1).min(left + 1);
            *cell = best;
            left = best;
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev.last().copied().unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// Tokens
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok<'a> {
    Ident(&'a str),
    Str,
    LParen,
    RParen,
    Comma,
    AndAnd,
    OrOr,
    Bang,
    Eof,
}

impl Tok<'_> {
    fn describe(self) -> String {
        match self {
            Tok::Ident(name) => format!("{name:?}"),
            Tok::Str => "string".into(),
            Tok::LParen => "\"(\"".into(),
            Tok::RParen => "\")\"".into(),
            Tok::Comma => "\",\"".into(),
            Tok::AndAnd => "\"&&\"".into(),
            Tok::OrOr => "\"||\"".into(),
            Tok::Bang => "\"!\"".into(),
            Tok::Eof => "end of rule".into(),
        }
    }
}

struct Token<'a> {
    tok: Tok<'a>,
    /// Byte offset of the token's first char.
    pos: usize,
    /// The unquoted value of a string token; empty otherwise.
    value: Cow<'a, str>,
}

/// A matcher argument: its unquoted value and the byte offset of its opening quote.
struct Arg<'a> {
    value: Cow<'a, str>,
    pos: usize,
}

// ---------------------------------------------------------------------------------------------
// Parser
// ---------------------------------------------------------------------------------------------

struct Parser<'a> {
    src: &'a str,
    /// Byte offset of the next unread char (always on a char boundary).
    pos: usize,
    peeked: Option<Token<'a>>,
    syntax: RuleSyntax,
    /// A TCP router rule: only the TCP matchers exist.
    tcp: bool,
    depth: usize,
    leaves: usize,
}

impl<'a> Parser<'a> {
    /// The 1-based column, in chars, of byte offset `pos`.
    fn column(&self, pos: usize) -> usize {
        self.src
            .char_indices()
            .take_while(|&(i, _)| i < pos)
            .count()
            + 1
    }

    fn err(&self, pos: usize, message: impl Into<String>) -> RuleError {
        RuleError {
            column: self.column(pos),
            message: message.into(),
        }
    }

    fn peek(&mut self) -> Result<(Tok<'a>, usize), RuleError> {
        if let Some(t) = &self.peeked {
            return Ok((t.tok, t.pos));
        }
        let t = self.lex()?;
        let out = (t.tok, t.pos);
        self.peeked = Some(t);
        Ok(out)
    }

    fn bump(&mut self) -> Result<Token<'a>, RuleError> {
        match self.peeked.take() {
            Some(t) => Ok(t),
            None => self.lex(),
        }
    }

    fn enter(&mut self, pos: usize) -> Result<(), RuleError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.err(
                pos,
                format!(
                    "rule is nested too deeply (at most {MAX_DEPTH} levels of \"(\" and \"!\")"
                ),
            ));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }

    fn parse_or(&mut self) -> Result<Matcher, RuleError> {
        let mut left = self.parse_and()?;
        while self.peek()?.0 == Tok::OrOr {
            self.bump()?;
            let right = self.parse_and()?;
            left = left.or(right);
        }
        Ok(left)
    }

    fn parse_and(&mut self) -> Result<Matcher, RuleError> {
        let mut left = self.parse_unary()?;
        while self.peek()?.0 == Tok::AndAnd {
            self.bump()?;
            let right = self.parse_unary()?;
            left = left.and(right);
        }
        Ok(left)
    }

    fn parse_unary(&mut self) -> Result<Matcher, RuleError> {
        let (tok, pos) = self.peek()?;
        if tok != Tok::Bang {
            return self.parse_primary();
        }
        self.bump()?;
        self.enter(pos)?;
        let inner = self.parse_unary()?;
        self.leave();
        Ok(inner.not())
    }

    fn parse_primary(&mut self) -> Result<Matcher, RuleError> {
        let open = self.bump()?;
        match open.tok {
            Tok::Ident(name) => self.parse_call(name, open.pos),
            Tok::LParen => {
                self.enter(open.pos)?;
                let inner = self.parse_or()?;
                self.leave();
                match self.peek()? {
                    (Tok::RParen, _) => {
                        self.bump()?;
                        Ok(inner)
                    }
                    (Tok::Eof, pos) => Err(self.err(
                        pos,
                        format!(
                            "missing \")\" to close the \"(\" at column {}",
                            self.column(open.pos)
                        ),
                    )),
                    (tok, pos) => Err(self.err(
                        pos,
                        format!(
                            "unexpected {}, expected \"&&\", \"||\" or \")\"",
                            tok.describe()
                        ),
                    )),
                }
            }
            tok => Err(self.err(
                open.pos,
                format!(
                    "unexpected {}, expected a matcher, \"!\" or \"(\"",
                    tok.describe()
                ),
            )),
        }
    }

    fn parse_call(&mut self, name: &'a str, name_pos: usize) -> Result<Matcher, RuleError> {
        let func = if self.tcp {
            Func::all_for(self.syntax, true)
                .iter()
                .copied()
                .find(|f| name_matches(name, f.name()))
                .ok_or_else(|| self.err(name_pos, unknown_tcp_matcher_message(name)))?
        } else {
            Func::lookup(name, self.syntax)
                .ok_or_else(|| self.err(name_pos, unknown_matcher_message(name, self.syntax)))?
        };
        let (tok, open_pos) = self.peek()?;
        if tok != Tok::LParen {
            return Err(self.err(
                open_pos,
                format!("expected \"(\" after {name}, found {}", tok.describe()),
            ));
        }
        self.bump()?;
        let unclosed = |p: &Self, pos: usize| {
            p.err(
                pos,
                format!(
                    "missing \")\" to close {name}( at column {}",
                    p.column(open_pos)
                ),
            )
        };
        let mut args = Vec::new();
        let close_pos = loop {
            let t = self.bump()?;
            match t.tok {
                Tok::RParen => break t.pos,
                Tok::Str => {
                    args.push(Arg {
                        value: t.value,
                        pos: t.pos,
                    });
                    let sep = self.bump()?;
                    match sep.tok {
                        Tok::Comma => {}
                        Tok::RParen => break sep.pos,
                        Tok::Eof => return Err(unclosed(self, sep.pos)),
                        other => {
                            return Err(self.err(
                                sep.pos,
                                format!(
                                    "unexpected {} in the arguments of {name}, \
                                     expected \",\" or \")\"",
                                    other.describe()
                                ),
                            ))
                        }
                    }
                }
                Tok::Eof => return Err(unclosed(self, t.pos)),
                other => {
                    return Err(self.err(
                        t.pos,
                        format!(
                            "unexpected {} in the arguments of {name}, expected a value quoted \
                             with backticks or double quotes",
                            other.describe()
                        ),
                    ))
                }
            }
        };
        match self.syntax {
            RuleSyntax::V3 => self.build_v3(func, name_pos, close_pos, &args),
            RuleSyntax::V2 => self.build_v2(func, name_pos, close_pos, &args),
        }
    }

    fn reserve_leaves(&mut self, n: usize, pos: usize) -> Result<(), RuleError> {
        self.leaves = self.leaves.saturating_add(n);
        if self.leaves > MAX_MATCHERS {
            return Err(self.err(
                pos,
                format!("rule has too many matchers (at most {MAX_MATCHERS})"),
            ));
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // v3 matchers
    // -----------------------------------------------------------------------------------------

    fn build_v3(
        &mut self,
        func: Func,
        name_pos: usize,
        close_pos: usize,
        args: &[Arg<'a>],
    ) -> Result<Matcher, RuleError> {
        let name = func.name();
        let (min, max) = match func {
            Func::Header | Func::HeaderRegexp => (2, 2),
            Func::Query | Func::QueryRegexp => (1, 2),
            _ => (1, 1),
        };
        let got = args.len();
        if got < min || got > max {
            let takes = if min == max {
                format!("{min} argument{}", plural(min))
            } else {
                format!("{min} or {max} arguments")
            };
            let mut msg = format!("{name} takes {takes}, got {got}");
            match func {
                Func::Host if got > max => msg.push_str(" (use v2 syntax or || for several hosts)"),
                Func::Header | Func::HeaderRegexp if got < min => {
                    msg.push_str(&format!(" (expected {name}(`name`, `value`))"))
                }
                Func::Header | Func::HeaderRegexp => {
                    msg.push_str(" (combine several headers with &&)")
                }
                Func::Query | Func::QueryRegexp => {}
                _ if got > max => {
                    msg.push_str(&format!(" (use || to combine several {name} matchers)"))
                }
                _ => {}
            }
            let pos = args.get(max).map_or(close_pos, |a| a.pos);
            return Err(self.err(pos, msg));
        }
        for (i, a) in args.iter().enumerate() {
            if a.value.is_empty() {
                let mut msg = format!("empty argument to {name}");
                // As Traefik 3, which refuses it too: the empty value has its own spelling.
                if func == Func::Query && i == 1 {
                    msg.push_str(" (Query(`k`) matches `?k` and `?k=`)");
                }
                return Err(self.err(a.pos, msg));
            }
        }
        self.reserve_leaves(1, name_pos)?;
        match (func, args) {
            (Func::Host, [a]) => self.host(func, a),
            (Func::HostRegexp, [a]) => {
                self.ascii_only(func, a)?;
                // As Traefik 3: the regex as written against the lower-cased host, so an
                // upper-case letter in it never matches.
                let p = Pattern::new(&a.value);
                Ok(Matcher::HostRegex(self.pattern(func, a, p)?))
            }
            (Func::Path | Func::PathPrefix, [a]) => {
                self.starts_with_slash(func, a)?;
                let path = a.value.to_string();
                Ok(if func == Func::Path {
                    Matcher::Path(path)
                } else {
                    Matcher::PathPrefix(path)
                })
            }
            (Func::PathRegexp, [a]) => Ok(Matcher::PathRegex(self.pattern(
                func,
                a,
                Pattern::new(&a.value),
            )?)),
            (Func::Method, [a]) => Ok(Matcher::Method(self.method(func, a)?)),
            (Func::Header, [n, v]) => Ok(Matcher::Header(
                self.header_name(func, n)?,
                v.value.to_string(),
            )),
            (Func::HeaderRegexp, [n, v]) => {
                let header = self.header_name(func, n)?;
                Ok(Matcher::HeaderRegex(
                    header,
                    self.pattern(func, v, Pattern::new(&v.value))?,
                ))
            }
            // Traefik: a lone key matches a parameter that has an empty value (`?mobile`).
            (Func::Query | Func::QueryRegexp, [k]) => {
                Ok(Matcher::Query(k.value.to_string(), Some(String::new())))
            }
            (Func::Query, [k, v]) => Ok(Matcher::Query(
                k.value.to_string(),
                Some(v.value.to_string()),
            )),
            (Func::QueryRegexp, [k, v]) => Ok(Matcher::QueryRegex(
                k.value.to_string(),
                self.pattern(func, v, Pattern::new(&v.value))?,
            )),
            (Func::ClientIp, [a]) => Ok(Matcher::ClientIp(self.client_ip(func, a)?)),
            (Func::HostSni, [a]) => self.host(func, a),
            (Func::HostSniRegexp, [a]) => {
                self.ascii_only(func, a)?;
                let p = Pattern::case_insensitive(&a.value);
                Ok(Matcher::HostRegex(self.pattern(func, a, p)?))
            }
            (Func::Alpn, [a]) => {
                // As Traefik: the TLS-ALPN-01 challenge protocol is the router's own.
                if a.value.eq_ignore_ascii_case("acme-tls/1") {
                    return Err(self.err(a.pos, "ALPN: acme-tls/1 is reserved for ACME challenges"));
                }
                Ok(Matcher::Alpn(a.value.to_string()))
            }
            _ => Err(self.err(name_pos, format!("{name} is not available in v3 syntax"))),
        }
    }

    // -----------------------------------------------------------------------------------------
    // v2 matchers
    // -----------------------------------------------------------------------------------------

    fn build_v2(
        &mut self,
        func: Func,
        name_pos: usize,
        close_pos: usize,
        args: &[Arg<'a>],
    ) -> Result<Matcher, RuleError> {
        let name = func.name();
        let pairs = matches!(func, Func::Headers | Func::HeadersRegexp);
        if args.is_empty() {
            let what = if pairs {
                "name/value pairs"
            } else {
                "at least 1 argument"
            };
            return Err(self.err(close_pos, format!("{name} takes {what}, got 0 arguments")));
        }
        if pairs && args.len() % 2 == 1 {
            let pos = args.last().map_or(close_pos, |a| a.pos);
            return Err(self.err(
                pos,
                format!(
                    "{name} takes name/value pairs, got {} argument{}",
                    args.len(),
                    plural(args.len())
                ),
            ));
        }
        if let Some(a) = args.iter().find(|a| a.value.is_empty()) {
            return Err(self.err(a.pos, format!("empty argument to {name}")));
        }
        let leaves = if pairs { args.len() / 2 } else { args.len() };
        self.reserve_leaves(leaves, name_pos)?;
        match func {
            Func::Host | Func::HostHeader => {
                let hosts = args.iter().map(|a| self.host(func, a));
                self.fold(hosts, Matcher::or, name_pos)
            }
            Func::HostRegexp => {
                let hosts = args.iter().map(|a| self.v2_host_regexp(func, a));
                self.fold(hosts, Matcher::or, name_pos)
            }
            Func::Path | Func::PathPrefix => {
                let paths = args.iter().map(|a| self.v2_path(func, a));
                self.fold(paths, Matcher::or, name_pos)
            }
            Func::Method => {
                let methods = args
                    .iter()
                    .map(|a| self.method(func, a).map(Matcher::Method));
                self.fold(methods, Matcher::or, name_pos)
            }
            Func::HostSni => {
                let hosts = args.iter().map(|a| self.host(func, a));
                self.fold(hosts, Matcher::or, name_pos)
            }
            Func::HostSniRegexp => {
                let hosts = args.iter().map(|a| {
                    let p = Pattern::case_insensitive(&a.value);
                    self.pattern(func, a, p).map(Matcher::HostRegex)
                });
                self.fold(hosts, Matcher::or, name_pos)
            }
            Func::ClientIp => {
                let nets = args
                    .iter()
                    .map(|a| self.client_ip(func, a).map(Matcher::ClientIp));
                self.fold(nets, Matcher::or, name_pos)
            }
            Func::Headers | Func::HeadersRegexp => self.v2_headers(func, name_pos, args),
            Func::Query => self.v2_query(func, name_pos, args),
            _ => Err(self.err(name_pos, format!("{name} is not available in v2 syntax"))),
        }
    }

    /// gorilla/mux `Host` template: `{sub:[a-z]+}.example.com`, matched against the whole host.
    fn v2_host_regexp(&self, func: Func, a: &Arg<'a>) -> Result<Matcher, RuleError> {
        self.ascii_only(func, a)?;
        let source = template_regex(&a.value, Template::Host)
            .map_err(|e| self.err(a.pos, format!("{}: {e}", func.name())))?;
        match source {
            Some(src) => Ok(Matcher::HostRegex(self.pattern(
                func,
                a,
                Pattern::case_insensitive(&src),
            )?)),
            // A literal `*` in a template only matches itself, unlike a `Host` wildcard.
            None if a.value.contains('*') => {
                let src = format!("^{}$", regex::escape(&a.value));
                Ok(Matcher::HostRegex(self.pattern(
                    func,
                    a,
                    Pattern::case_insensitive(&src),
                )?))
            }
            None => self.host(func, a),
        }
    }

    /// gorilla/mux `Path` / `PathPrefix` template; a template path becomes an anchored regex.
    fn v2_path(&self, func: Func, a: &Arg<'a>) -> Result<Matcher, RuleError> {
        self.starts_with_slash(func, a)?;
        let kind = if func == Func::Path {
            Template::Path
        } else {
            Template::Prefix
        };
        let source = template_regex(&a.value, kind)
            .map_err(|e| self.err(a.pos, format!("{}: {e}", func.name())))?;
        match source {
            Some(src) => Ok(Matcher::PathRegex(self.pattern(
                func,
                a,
                Pattern::new(&src),
            )?)),
            None if func == Func::Path => Ok(Matcher::Path(a.value.to_string())),
            None => Ok(Matcher::PathPrefix(a.value.to_string())),
        }
    }

    /// gorilla/mux `Headers` / `HeadersRegexp`: every pair must match (a later pair for the same
    /// header replaces an earlier one, as gorilla keeps them in a map).
    fn v2_headers(
        &self,
        func: Func,
        name_pos: usize,
        args: &[Arg<'a>],
    ) -> Result<Matcher, RuleError> {
        let mut pairs: Vec<(HeaderName, &Arg<'a>)> = Vec::new();
        for chunk in args.chunks_exact(2) {
            if let [n, v] = chunk {
                let header = self.header_name(func, n)?;
                match pairs.iter_mut().find(|(h, _)| *h == header) {
                    Some(slot) => slot.1 = v,
                    None => pairs.push((header, v)),
                }
            }
        }
        let matchers = pairs.into_iter().map(|(header, v)| {
            if func == Func::Headers {
                Ok(Matcher::Header(header, v.value.to_string()))
            } else {
                Ok(Matcher::HeaderRegex(
                    header,
                    self.pattern(func, v, Pattern::new(&v.value))?,
                ))
            }
        });
        self.fold(matchers, Matcher::and, name_pos)
    }

    /// Traefik v2 `Query`: each argument is split at its first `=` and the pieces are handed to
    /// gorilla/mux as key/value pairs, all of which must match. A value may be a template; an
    /// empty value (`key=`) matches any value.
    fn v2_query(
        &self,
        func: Func,
        name_pos: usize,
        args: &[Arg<'a>],
    ) -> Result<Matcher, RuleError> {
        let mut parts: Vec<(&str, usize)> = Vec::with_capacity(args.len() * 2);
        for a in args {
            match a.value.split_once('=') {
                Some((k, v)) => {
                    parts.push((k, a.pos));
                    parts.push((v, a.pos));
                }
                None => parts.push((&a.value, a.pos)),
            }
        }
        if parts.len() % 2 == 1 {
            let pos = args
                .iter()
                .rev()
                .find(|a| !a.value.contains('='))
                .map_or(name_pos, |a| a.pos);
            return Err(self.err(
                pos,
                "Query in v2 syntax takes key=value arguments (use `key=` to match any value)",
            ));
        }
        let matchers = parts.chunks_exact(2).map(|chunk| match chunk {
            [(key, pos), (value, _)] => self.v2_query_pair(func, key, value, *pos),
            _ => Err(self.err(name_pos, "Query in v2 syntax takes key=value arguments")),
        });
        self.fold(matchers, Matcher::and, name_pos)
    }

    fn v2_query_pair(
        &self,
        func: Func,
        key: &str,
        value: &str,
        pos: usize,
    ) -> Result<Matcher, RuleError> {
        if key.is_empty() {
            return Err(self.err(pos, "Query: empty query parameter name"));
        }
        if key.contains(['{', '}']) {
            return Err(self.err(
                pos,
                format!("Query: templates are not supported in parameter names ({key:?})"),
            ));
        }
        if value.is_empty() {
            let any = Pattern::new("^.*$").map_err(|e| self.err(pos, e))?;
            return Ok(Matcher::QueryRegex(key.to_string(), any));
        }
        let source = template_regex(value, Template::Query)
            .map_err(|e| self.err(pos, format!("Query: {e}")))?;
        match source {
            Some(src) => {
                let p = Pattern::new(&src).map_err(|e| self.err(pos, regex_message(func, &e)))?;
                Ok(Matcher::QueryRegex(key.to_string(), p))
            }
            None => Ok(Matcher::Query(key.to_string(), Some(value.to_string()))),
        }
    }

    // -----------------------------------------------------------------------------------------
    // Argument helpers
    // -----------------------------------------------------------------------------------------

    fn fold(
        &self,
        items: impl Iterator<Item = Result<Matcher, RuleError>>,
        join: fn(Matcher, Matcher) -> Matcher,
        pos: usize,
    ) -> Result<Matcher, RuleError> {
        let mut acc: Option<Matcher> = None;
        for item in items {
            let m = item?;
            acc = Some(match acc {
                None => m,
                Some(prev) => join(prev, m),
            });
        }
        acc.ok_or_else(|| self.err(pos, "matcher needs at least one argument"))
    }

    fn host(&self, func: Func, a: &Arg<'a>) -> Result<Matcher, RuleError> {
        // Traefik 3: `Host(`*`)` matches every request, any host or none.
        if a.value.trim() == "*" {
            return Ok(Matcher::Always);
        }
        self.ascii_only(func, a)?;
        HostPattern::parse(&a.value)
            .map(Matcher::Host)
            .map_err(|e| self.err(a.pos, format!("{}: {e}", func.name())))
    }

    fn ascii_only(&self, func: Func, a: &Arg<'a>) -> Result<(), RuleError> {
        if a.value.is_ascii() {
            return Ok(());
        }
        Err(self.err(
            a.pos,
            format!(
                "{}: non-ASCII characters are not allowed in {:?}; use the punycode form (xn--…)",
                func.name(),
                a.value
            ),
        ))
    }

    fn starts_with_slash(&self, func: Func, a: &Arg<'a>) -> Result<(), RuleError> {
        if a.value.starts_with('/') {
            return Ok(());
        }
        Err(self.err(
            a.pos,
            format!("{}: path {:?} must start with \"/\"", func.name(), a.value),
        ))
    }

    fn pattern(
        &self,
        func: Func,
        a: &Arg<'a>,
        compiled: Result<Pattern, String>,
    ) -> Result<Pattern, RuleError> {
        compiled.map_err(|e| self.err(a.pos, regex_message(func, &e)))
    }

    fn method(&self, func: Func, a: &Arg<'a>) -> Result<Method, RuleError> {
        Method::from_bytes(a.value.to_ascii_uppercase().as_bytes()).map_err(|_| {
            self.err(
                a.pos,
                format!("{}: invalid HTTP method {:?}", func.name(), a.value),
            )
        })
    }

    fn header_name(&self, func: Func, a: &Arg<'a>) -> Result<HeaderName, RuleError> {
        HeaderName::from_bytes(a.value.to_ascii_lowercase().as_bytes()).map_err(|_| {
            self.err(
                a.pos,
                format!("{}: invalid header name {:?}", func.name(), a.value),
            )
        })
    }

    fn client_ip(&self, func: Func, a: &Arg<'a>) -> Result<IpNet, RuleError> {
        parse_ip_or_cidr(&a.value).ok_or_else(|| {
            self.err(
                a.pos,
                format!(
                    "{}: invalid IP address or CIDR {:?} (expected e.g. `10.0.0.1` or \
                     `10.0.0.0/8`)",
                    func.name(),
                    a.value
                ),
            )
        })
    }

    // -----------------------------------------------------------------------------------------
    // Lexer
    // -----------------------------------------------------------------------------------------

    fn lex(&mut self) -> Result<Token<'a>, RuleError> {
        let rest = self.src.get(self.pos..).unwrap_or("");
        let trimmed = rest.trim_start();
        self.pos += rest.len() - trimmed.len();
        let start = self.pos;
        let simple = |tok: Tok<'a>| Token {
            tok,
            pos: start,
            value: Cow::Borrowed(""),
        };
        let Some(c) = trimmed.chars().next() else {
            return Ok(simple(Tok::Eof));
        };
        let second = trimmed.as_bytes().get(1).copied();
        let (token, len) =
            match c {
                '(' => (simple(Tok::LParen), 1),
                ')' => (simple(Tok::RParen), 1),
                ',' => (simple(Tok::Comma), 1),
                '!' => (simple(Tok::Bang), 1),
                '&' if second == Some(b'&') => (simple(Tok::AndAnd), 2),
                '|' if second == Some(b'|') => (simple(Tok::OrOr), 2),
                '&' => return Err(self.err(start, "unexpected \"&\" (did you mean \"&&\"?)")),
                '|' => return Err(self.err(start, "unexpected \"|\" (did you mean \"||\"?)")),
                '`' => {
                    let body = trimmed.get(1..).unwrap_or("");
                    let end = body.find('`').ok_or_else(|| self.unterminated(start))?;
                    let content = body.get(..end).unwrap_or("");
                    // Go drops carriage returns from raw string literals.
                    let value = if content.contains('\r') {
                        Cow::Owned(content.replace('\r', ""))
                    } else {
                        Cow::Borrowed(content)
                    };
                    (
                        Token {
                            tok: Tok::Str,
                            pos: start,
                            value,
                        },
                        end + 2,
                    )
                }
                '"' => {
                    let body = trimmed.get(1..).unwrap_or("");
                    let (value, used) = self.lex_interpreted(start, body)?;
                    (
                        Token {
                            tok: Tok::Str,
                            pos: start,
                            value,
                        },
                        used + 1,
                    )
                }
                '\'' => return Err(self.err(
                    start,
                    "single quotes are not accepted; quote values with backticks (`) or double \
                     quotes (\")",
                )),
                c if c.is_alphanumeric() || c == '_' => {
                    let end = trimmed
                        .find(|ch: char| !(ch.is_alphanumeric() || ch == '_'))
                        .unwrap_or(trimmed.len());
                    (simple(Tok::Ident(trimmed.get(..end).unwrap_or(""))), end)
                }
                c => return Err(self.err(start, format!("unexpected character {c:?}"))),
            };
        self.pos += len;
        Ok(token)
    }

    fn unterminated(&self, start: usize) -> RuleError {
        self.err(start, "unterminated string")
    }

    /// Reads a Go interpreted string literal whose opening `"` is at `start`; `body` follows it.
    /// Returns the value and the number of bytes of `body` consumed (closing quote included).
    fn lex_interpreted(
        &self,
        start: usize,
        body: &'a str,
    ) -> Result<(Cow<'a, str>, usize), RuleError> {
        let bytes = body.as_bytes();
        let special = bytes
            .iter()
            .position(|&b| matches!(b, b'"' | b'\\' | b'\n'));
        if let Some(end) = special {
            if bytes.get(end) == Some(&b'"') {
                return Ok((Cow::Borrowed(body.get(..end).unwrap_or("")), end + 1));
            }
        }
        let mut out: Vec<u8> = Vec::with_capacity(bytes.len());
        let mut i = 0;
        loop {
            let Some(&b) = bytes.get(i) else {
                return Err(self.unterminated(start));
            };
            match b {
                b'"' => {
                    let value = String::from_utf8(out).map_err(|_| {
                        self.err(
                            start,
                            "string is not valid UTF-8 once its escapes are decoded",
                        )
                    })?;
                    return Ok((Cow::Owned(value), i + 1));
                }
                b'\n' => return Err(self.unterminated(start)),
                b'\\' => {
                    let at = start + 1 + i;
                    let Some(&e) = bytes.get(i + 1) else {
                        return Err(self.unterminated(start));
                    };
                    let simple = match e {
                        b'a' => Some(0x07),
                        b'b' => Some(0x08),
                        b'f' => Some(0x0c),
                        b'n' => Some(b'\n'),
                        b'r' => Some(b'\r'),
                        b't' => Some(b'\t'),
                        b'v' => Some(0x0b),
                        b'\\' => Some(b'\\'),
                        b'"' => Some(b'"'),
                        _ => None,
                    };
                    if let Some(v) = simple {
                        out.push(v);
                        i += 2;
                        continue;
                    }
                    let (digits, radix) = match e {
                        b'0'..=b'7' => (3, 8),
                        b'x' => (2, 16),
                        b'u' => (4, 16),
                        b'U' => (8, 16),
                        _ => {
                            let shown = body.get(i + 1..).and_then(|s| s.chars().next());
                            let shown = shown.map_or(String::new(), String::from);
                            return Err(self.err(
                                at,
                                format!("unknown escape sequence \"\\{shown}\" in string"),
                            ));
                        }
                    };
                    let first = if radix == 8 { i + 1 } else { i + 2 };
                    let value = bytes
                        .get(first..first + digits)
                        .and_then(|ds| {
                            ds.iter().try_fold(0u32, |acc, &d| {
                                char::from(d).to_digit(radix).map(|v| acc * radix + v)
                            })
                        })
                        .ok_or_else(|| {
                            self.err(
                                at,
                                format!("escape sequence needs {digits} base-{radix} digits"),
                            )
                        })?;
                    match e {
                        b'0'..=b'7' | b'x' => {
                            let byte = u8::try_from(value)
                                .map_err(|_| self.err(at, "octal escape value > 255"))?;
                            out.push(byte);
                        }
                        _ => {
                            let ch = char::from_u32(value).ok_or_else(|| {
                                self.err(at, "escape sequence is an invalid Unicode code point")
                            })?;
                            let mut buf = [0u8; 4];
                            out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                        }
                    }
                    i = first + digits;
                }
                other => {
                    out.push(other);
                    i += 1;
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Free helpers
// ---------------------------------------------------------------------------------------------

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// Prefixes a `Pattern` error with the matcher name and shortens it to one line.
fn regex_message(func: Func, err: &str) -> String {
    format!("{}: {}", func.name(), one_line_regex_error(err))
}

/// Shortens `invalid regex "(": regex parse error:\n    (\n    ^\nerror: unclosed group` (the
/// regex crate's multi-line report) to `invalid regex "(": unclosed group`.
fn one_line_regex_error(err: &str) -> String {
    let mut lines = err.lines().map(str::trim).filter(|l| !l.is_empty());
    let head = lines.next().unwrap_or("invalid regex");
    match lines.next_back() {
        Some(last) => {
            let head = head
                .strip_suffix("regex parse error:")
                .unwrap_or(head)
                .trim_end();
            format!(
                "{head} {}",
                last.strip_prefix("error:").unwrap_or(last).trim()
            )
        }
        None => head.to_string(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Template {
    Host,
    Path,
    Prefix,
    Query,
}

/// Translates a gorilla/mux template into a regex source, or `None` when it has no variables.
///
/// As in gorilla/mux: literal text is escaped, `{name}` uses the default pattern (`[^.]+` in a
/// host, `[^/]+` in a path, `.*` in a query value), `{name:re}` uses `re` (which may itself
/// contain balanced braces), the result is anchored at the start, and at the end unless it is a
/// path prefix.
fn template_regex(tpl: &str, kind: Template) -> Result<Option<String>, String> {
    let default = match kind {
        Template::Host => "[^.]+",
        Template::Path | Template::Prefix => "[^/]+",
        Template::Query => ".*",
    };
    let mut out = String::from("^");
    let mut level = 0usize;
    let mut open = 0usize;
    let mut literal_start = 0usize;
    let mut vars = 0usize;
    for (i, b) in tpl.bytes().enumerate() {
        match b {
            b'{' => {
                if level == 0 {
                    open = i;
                }
                level += 1;
            }
            b'}' => {
                if level == 0 {
                    return Err(format!("unbalanced braces in {tpl:?}"));
                }
                level -= 1;
                if level > 0 {
                    continue;
                }
                out.push_str(&regex::escape(tpl.get(literal_start..open).unwrap_or("")));
                let inner = tpl.get(open + 1..i).unwrap_or("");
                let (name, pattern) = inner.split_once(':').unwrap_or((inner, default));
                if name.is_empty() || pattern.is_empty() {
                    let var = tpl.get(open..=i).unwrap_or(inner);
                    return Err(format!("missing name or pattern in {var:?}"));
                }
                // gorilla/mux compiles each variable's pattern on its own first, which rejects
                // patterns that would escape their group (e.g. `a)|(b`).
                if let Err(e) = regex::Regex::new(pattern) {
                    return Err(one_line_regex_error(&format!(
                        "invalid regex {pattern:?}: {e}"
                    )));
                }
                out.push_str("(?:");
                out.push_str(pattern);
                out.push(')');
                literal_start = i + 1;
                vars += 1;
            }
            _ => {}
        }
    }
    if level != 0 {
        return Err(format!("unbalanced braces in {tpl:?}"));
    }
    if vars == 0 {
        return Ok(None);
    }
    out.push_str(&regex::escape(tpl.get(literal_start..).unwrap_or("")));
    if kind != Template::Prefix {
        out.push('$');
    }
    Ok(Some(out))
}

/// Parses an IP (→ /32 or /128) or a CIDR (host bits cleared, as Go's `net.ParseCIDR` does).
/// IPv4-mapped IPv6 forms are stored as IPv4, matching how request addresses are compared.
fn parse_ip_or_cidr(s: &str) -> Option<IpNet> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        return Some(IpNet::from(ip));
    }
    let net = s.parse::<IpNet>().ok()?.trunc();
    if let IpNet::V6(v6) = net {
        if let (Some(v4), true) = (v6.network().to_ipv4_mapped(), v6.prefix_len() >= 96) {
            return Ipv4Net::new(v4, v6.prefix_len() - 96).ok().map(IpNet::V4);
        }
    }
    Some(net)
}

#[cfg(test)]
mod tests {
    use super::super::matcher::RequestView;
    use super::*;
    use http::HeaderMap;

    use RuleSyntax::{V2, V3};

    enum Want {
        Ok(&'static str),
        Err(usize, &'static str),
    }
    use Want::{Err as E, Ok as K};

    #[rustfmt::skip]
    const CASES: &[(&str, RuleSyntax, Want)] = &[
        // --- v3: every matcher ---
        ("Host(`example.com`)", V3, K("Host(`example.com`)")),
        ("Host(`Example.COM.`)", V3, K("Host(`example.com`)")),
        ("Host(`*.example.com`)", V3, K("Host(`*.example.com`)")),
        ("HostRegexp(`^.+\\.example\\.com$`)", V3, K("HostRegexp(`^.+\\.example\\.com$`)")),
        ("Path(`/products`)", V3, K("Path(`/products`)")),
        ("PathPrefix(`/api`)", V3, K("PathPrefix(`/api`)")),
        ("PathRegexp(`\\.(jpeg|jpg|png)$`)", V3, K("PathRegexp(`\\.(jpeg|jpg|png)$`)")),
        ("Method(`get`)", V3, K("Method(`GET`)")),
        ("Method(`PURGE`)", V3, K("Method(`PURGE`)")),
        ("Header(`Content-Type`, `application/yaml`)", V3, K("Header(`content-type`, `application/yaml`)")),
        ("HeaderRegexp(`X-Version`, `^v[0-9]+$`)", V3, K("HeaderRegexp(`x-version`, `^v[0-9]+$`)")),
        ("Query(`mobile`, `true`)", V3, K("Query(`mobile`, `true`)")),
        ("Query(`mobile`)", V3, K("Query(`mobile`)")),
        ("Host(`::1`)", V3, K("Host(`[::1]`)")),
        ("Host(`[::1]`)", V3, K("Host(`[::1]`)")),
        ("Host(`[2001:DB8::1]`)", V3, K("Host(`[2001:db8::1]`)")),
        ("Query(`mobile`, ``)", V3, E(17, "empty argument to Query (Query(`k`) matches `?k` and `?k=`)")),
        ("QueryRegexp(`mobile`, `^(true|yes)$`)", V3, K("QueryRegexp(`mobile`, `^(true|yes)$`)")),
        ("QueryRegexp(`mobile`)", V3, K("Query(`mobile`)")),
        ("ClientIP(`10.0.0.0/8`)", V3, K("ClientIP(`10.0.0.0/8`)")),
        ("ClientIP(`10.76.105.11`)", V3, K("ClientIP(`10.76.105.11/32`)")),
        ("ClientIP(`::1`)", V3, K("ClientIP(`::1/128`)")),
        ("ClientIP(`fe80::/10`)", V3, K("ClientIP(`fe80::/10`)")),
        ("ClientIP(`192.168.1.7/24`)", V3, K("ClientIP(`192.168.1.0/24`)")),
        ("ClientIP(`::ffff:10.0.0.1`)", V3, K("ClientIP(`10.0.0.1/32`)")),
        ("ClientIP(`::ffff:10.0.0.0/104`)", V3, K("ClientIP(`10.0.0.0/8`)")),
        // --- precedence and grouping ---
        ("Host(`a`) || Host(`b`) && Path(`/c`)", V3, K("Host(`a`) || Host(`b`) && Path(`/c`)")),
        ("Host(`a`) && Host(`b`) || Path(`/c`)", V3, K("Host(`a`) && Host(`b`) || Path(`/c`)")),
        ("(Host(`a`) || Host(`b`)) && Path(`/c`)", V3, K("(Host(`a`) || Host(`b`)) && Path(`/c`)")),
        ("!Host(`a`) && Path(`/b`)", V3, K("!Host(`a`) && Path(`/b`)")),
        ("!(Host(`a`) && Path(`/b`))", V3, K("!(Host(`a`) && Path(`/b`))")),
        ("!!Host(`a`)", V3, K("!!Host(`a`)")),
        ("Host(`a`) && Path(`/b`) && Method(`GET`)", V3, K("Host(`a`) && Path(`/b`) && Method(`GET`)")),
        ("Host(`a`) || (Host(`b`) || Host(`c`))", V3, K("Host(`a`) || (Host(`b`) || Host(`c`))")),
        ("((Host(`a`)))", V3, K("Host(`a`)")),
        ("Host(`a`) && (Path(`/x`) || !PathPrefix(`/y`))", V3, K("Host(`a`) && (Path(`/x`) || !PathPrefix(`/y`))")),
        // --- quoting, escapes, whitespace ---
        ("Host(\"a.com\")", V3, K("Host(`a.com`)")),
        ("Host(\"a\\x2ecom\")", V3, K("Host(`a.com`)")),
        ("Path(\"\\057x\")", V3, K("Path(`/x`)")),
        ("PathPrefix(\"/caf\\u00e9\")", V3, K("PathPrefix(`/café`)")),
        ("PathPrefix(\"/\\U0001F600\")", V3, K("PathPrefix(`/😀`)")),
        ("Path(\"/a\\\"b\")", V3, K("Path(`/a\"b`)")),
        ("Header(\"X-A\", \"tab\\there\")", V3, K("Header(`x-a`, `tab\there`)")),
        ("Header(`X-A`, \"`\")", V3, K("Header(`x-a`, \"`\")")),
        ("  Host ( `a.com` )&&PathPrefix(`/x`)  \n", V3, K("Host(`a.com`) && PathPrefix(`/x`)")),
        ("\tHost(`a.com`)\n\t|| Host(`b.com`)\r\n", V3, K("Host(`a.com`) || Host(`b.com`)")),
        ("Header( `X-A` ,`b` )", V3, K("Header(`x-a`, `b`)")),
        ("Host(`a.com`,)", V3, K("Host(`a.com`)")),
        // --- matcher-name case (Traefik: exact, lower, UPPER, Capitalised) ---
        ("host(`a`)", V3, K("Host(`a`)")),
        ("HOST(`a`)", V3, K("Host(`a`)")),
        ("hostregexp(`a`)", V3, K("HostRegexp(`a`)")),
        ("HOSTREGEXP(`a`)", V3, K("HostRegexp(`a`)")),
        ("Hostregexp(`a`)", V3, K("HostRegexp(`a`)")),
        ("pathprefix(`/`)", V3, K("PathPrefix(`/`)")),
        ("Pathprefix(`/`)", V3, K("PathPrefix(`/`)")),
        ("clientip(`::1`)", V3, K("ClientIP(`::1/128`)")),
        ("Clientip(`::1`)", V3, K("ClientIP(`::1/128`)")),
        ("hostRegexp(`a`)", V3, E(1, "unknown matcher \"hostRegexp\" (did you mean \"HostRegexp\"?)")),
        ("hOST(`a`)", V3, E(1, "unknown matcher \"hOST\"")),
        // --- v3 errors, with exact columns ---
        ("", V3, E(1, "empty rule")),
        ("   \n ", V3, E(1, "empty rule")),
        ("Hots(`a.com`)", V3, E(1, "unknown matcher \"Hots\" (did you mean \"Host\"?)")),
        ("Host `a.com`", V3, E(6, "expected \"(\" after Host")),
        ("Host && Path(`/`)", V3, E(6, "expected \"(\" after Host, found \"&&\"")),
        ("Host(`a.com)", V3, E(6, "unterminated string")),
        ("Host(\"a.com)", V3, E(6, "unterminated string")),
        ("Host(\"a.com\n\")", V3, E(6, "unterminated string")),
        ("Host(`a`) && && Path(`/`)", V3, E(14, "unexpected \"&&\"")),
        ("&& Host(`a`)", V3, E(1, "unexpected \"&&\"")),
        ("Host(`a`, `b`)", V3, E(11, "Host takes 1 argument, got 2 (use v2 syntax or || for several hosts)")),
        ("Path(`/a`, `/b`)", V3, E(12, "Path takes 1 argument, got 2 (use || to combine several Path matchers)")),
        ("Method(`GET`, `POST`)", V3, E(15, "Method takes 1 argument, got 2")),
        ("Header(`k`)", V3, E(11, "Header takes 2 arguments, got 1")),
        ("Query(`a`, `b`, `c`)", V3, E(17, "Query takes 1 or 2 arguments, got 3")),
        ("Host()", V3, E(6, "Host takes 1 argument, got 0")),
        ("Host(``)", V3, E(6, "empty argument to Host")),
        ("QueryRegexp(`k`, ``)", V3, E(18, "empty argument to QueryRegexp")),
        ("PathRegexp(`(`)", V3, E(12, "PathRegexp: invalid regex \"(\": unclosed group")),
        ("HostRegexp(`[`)", V3, E(12, "HostRegexp: invalid regex")),
        ("HeaderRegexp(`X`, `a{2,1}`)", V3, E(19, "invalid regex")),
        ("ClientIP(`10.0.0.0/33`)", V3, E(10, "invalid IP address or CIDR")),
        ("ClientIP(`example.com`)", V3, E(10, "invalid IP address or CIDR")),
        ("Host(`a`) Path(`/`)", V3, E(11, "unexpected \"Path\", expected \"&&\" or \"||\"")),
        ("Host(`a`))", V3, E(10, "unexpected \")\" without a matching \"(\"")),
        ("(Host(`a`)", V3, E(11, "missing \")\" to close the \"(\" at column 1")),
        ("(Host(`a`) Path(`/`))", V3, E(12, "expected \"&&\", \"||\" or \")\"")),
        ("Path(`foo`)", V3, E(6, "Path: path \"foo\" must start with \"/\"")),
        ("PathPrefix(`foo`)", V3, E(12, "must start with \"/\"")),
        ("Host(`a`) & Path(`/`)", V3, E(11, "unexpected \"&\" (did you mean \"&&\"?)")),
        ("Host(`a`) | Path(`/`)", V3, E(11, "did you mean \"||\"?")),
        ("Host('a')", V3, E(6, "single quotes are not accepted")),
        ("Host(`é.com`)", V3, E(6, "non-ASCII characters are not allowed")),
        ("HostRegexp(`é`)", V3, E(12, "non-ASCII")),
        ("Method(`G ET`)", V3, E(8, "invalid HTTP method")),
        ("Header(`bad name`, `v`)", V3, E(8, "invalid header name \"bad name\"")),
        ("Host(\"a\\qb\")", V3, E(8, "unknown escape sequence \"\\q\"")),
        ("Host(\"a\\'b\")", V3, E(8, "unknown escape sequence")),
        ("Host(\"\\xff\")", V3, E(6, "not valid UTF-8")),
        ("Host(\"\\x4\")", V3, E(7, "escape sequence needs 2 base-16 digits")),
        ("Host(\"\\400\")", V3, E(7, "octal escape value > 255")),
        ("Host(\"\\uD800\")", V3, E(7, "invalid Unicode code point")),
        ("Path(`/é`) && Hots(`a`)", V3, E(15, "unknown matcher \"Hots\"")),
        ("Headers(`k`, `v`)", V3, E(1, "Headers is v2 syntax; in v3 syntax use Header")),
        ("HostHeader(`a`)", V3, E(1, "in v3 syntax use Host")),
        ("Frobnicate(`a`)", V3, E(1, "unknown matcher \"Frobnicate\"")),
        ("Host(`a`) ||", V3, E(13, "unexpected end of rule, expected a matcher")),
        ("!", V3, E(2, "unexpected end of rule")),
        ("()", V3, E(2, "unexpected \")\", expected a matcher")),
        ("`a.com`", V3, E(1, "unexpected string, expected a matcher")),
        ("Host(foo)", V3, E(6, "expected a value quoted with backticks or double quotes")),
        ("Host(,)", V3, E(6, "unexpected \",\"")),
        ("Host(`a` `b`)", V3, E(10, "expected \",\" or \")\"")),
        ("Host(`a`", V3, E(9, "missing \")\" to close Host( at column 5")),
        ("Host(`a`,", V3, E(10, "missing \")\"")),
        ("Host(`a`)(`b`)", V3, E(10, "unexpected \"(\"")),
        ("Host(`a`) #", V3, E(11, "unexpected character '#'")),
        ("Host(`a`) && /* c */ Path(`/`)", V3, E(14, "unexpected character '/'")),
        ("Host(`a`)\0", V3, E(10, "unexpected character '\\0'")),
        ("Host(`**.a.com`)", V3, E(6, "Host:")),
        ("Host(`a.*.com`)", V3, E(6, "only allowed as the first label")),
        // --- v2: every matcher ---
        ("Host(`a.com`, `B.com.`)", V2, K("Host(`a.com`) || Host(`b.com`)")),
        ("HostHeader(`a.com`)", V2, K("Host(`a.com`)")),
        ("Hostheader(`a.com`)", V2, K("Host(`a.com`)")),
        ("HostRegexp(`{sub:[a-z]+}.example.com`)", V2, K("HostRegexp(`^(?:[a-z]+)\\.example\\.com$`)")),
        ("HostRegexp(`{sub}.example.com`, `example.org`)", V2, K("HostRegexp(`^(?:[^.]+)\\.example\\.com$`) || Host(`example.org`)")),
        ("HostRegexp(`{sub:[a-z]{2}}.x.com`)", V2, K("HostRegexp(`^(?:[a-z]{2})\\.x\\.com$`)")),
        ("HostRegexp(`*.x.com`)", V2, K("HostRegexp(`^\\*\\.x\\.com$`)")),
        ("Path(`/a`, `/b`)", V2, K("Path(`/a`) || Path(`/b`)")),
        ("Path(`/a.b`)", V2, K("Path(`/a.b`)")),
        ("Path(`/a/{id:[0-9]+}`)", V2, K("PathRegexp(`^/a/(?:[0-9]+)$`)")),
        ("Path(`/a/{id}/b`)", V2, K("PathRegexp(`^/a/(?:[^/]+)/b$`)")),
        ("PathPrefix(`/api`)", V2, K("PathPrefix(`/api`)")),
        ("PathPrefix(`/api/{v}/`)", V2, K("PathRegexp(`^/api/(?:[^/]+)/`)")),
        ("Method(`get`, `POST`)", V2, K("Method(`GET`) || Method(`POST`)")),
        ("Headers(`X-A`, `1`)", V2, K("Header(`x-a`, `1`)")),
        ("Headers(`X-A`, `1`, `X-B`, `2`)", V2, K("Header(`x-a`, `1`) && Header(`x-b`, `2`)")),
        ("Headers(`X-A`, `1`, `x-a`, `2`)", V2, K("Header(`x-a`, `2`)")),
        ("HeadersRegexp(`X-A`, `^v`)", V2, K("HeaderRegexp(`x-a`, `^v`)")),
        ("headersregexp(`X-A`, `^v`, `X-B`, `w$`)", V2, K("HeaderRegexp(`x-a`, `^v`) && HeaderRegexp(`x-b`, `w$`)")),
        ("Query(`a=1`)", V2, K("Query(`a`, `1`)")),
        ("Query(`a=1`, `b=`)", V2, K("Query(`a`, `1`) && QueryRegexp(`b`, `^.*$`)")),
        ("Query(`id={id:[0-9]+}`)", V2, K("QueryRegexp(`id`, `^(?:[0-9]+)$`)")),
        ("Query(`a=b=c`)", V2, K("Query(`a`, `b=c`)")),
        ("Query(`a`, `b`)", V2, K("Query(`a`, `b`)")),
        ("ClientIP(`10.0.0.0/8`, `::1`)", V2, K("ClientIP(`10.0.0.0/8`) || ClientIP(`::1/128`)")),
        ("Host(`a`, `b`) && Path(`/c`)", V2, K("(Host(`a`) || Host(`b`)) && Path(`/c`)")),
        ("!Host(`a`, `b`)", V2, K("!(Host(`a`) || Host(`b`))")),
        ("HOST(\"a\") || pathprefix(`/p`, `/q`)", V2, K("Host(`a`) || (PathPrefix(`/p`) || PathPrefix(`/q`))")),
        // --- v2 errors ---
        ("Path(`/a/{id`)", V2, E(6, "Path: unbalanced braces")),
        ("Path(`/a/id}`)", V2, E(6, "unbalanced braces")),
        ("Path(`/a/{:x}`)", V2, E(6, "missing name or pattern in \"{:x}\"")),
        ("Path(`/a/{x:}`)", V2, E(6, "missing name or pattern")),
        ("Path(`/{id:a)|(b}`)", V2, E(6, "invalid regex \"a)|(b\"")),
        ("Path(`a`)", V2, E(6, "must start with \"/\"")),
        ("Path(`/ok`, `bad`)", V2, E(13, "path \"bad\" must start")),
        ("Query(`a`)", V2, E(7, "Query in v2 syntax takes key=value arguments")),
        ("Query(`a=1`, `b`)", V2, E(14, "key=value")),
        ("Query(`=v`)", V2, E(7, "empty query parameter name")),
        ("Query(`{k}=v`)", V2, E(7, "templates are not supported in parameter names")),
        ("Query(`k={v`)", V2, E(7, "unbalanced braces")),
        ("Headers(`a`)", V2, E(9, "Headers takes name/value pairs, got 1 argument")),
        ("Headers()", V2, E(9, "Headers takes name/value pairs, got 0")),
        ("Headers(`a b`, `c`)", V2, E(9, "invalid header name")),
        ("HeadersRegexp(`a`, `(`)", V2, E(20, "HeadersRegexp: invalid regex")),
        ("PathRegexp(`/a`)", V2, E(1, "PathRegexp only exists in v3 syntax")),
        ("Header(`a`, `b`)", V2, E(1, "Header is v3 syntax; in v2 syntax use Headers")),
        ("Host()", V2, E(6, "Host takes at least 1 argument, got 0")),
        ("Host(`a`, ``)", V2, E(11, "empty argument to Host")),
        ("ClientIP(`1.2.3.4`, `nope`)", V2, E(21, "invalid IP address or CIDR \"nope\"")),
        ("Method(`GET`, `B AD`)", V2, E(15, "invalid HTTP method")),
        ("HostRegexp(`é{a}`)", V2, E(12, "non-ASCII")),
        ("Host(`a`) Host(`b`)", V2, E(11, "unexpected \"Host\"")),
    ];

    #[test]
    fn table() {
        let mut failures = Vec::new();
        for (input, syntax, want) in CASES {
            let got = parse_rule(input, *syntax);
            match (want, &got) {
                (K(expected), Ok(m)) if m.to_string() == *expected => {}
                (E(col, frag), Err(e)) if e.column == *col && e.message.contains(frag) => {}
                _ => failures.push(format!(
                    "{input:?} ({syntax:?}): got {:?}",
                    got.map(|m| m.to_string())
                )),
            }
        }
        assert!(
            failures.is_empty(),
            "{} failures:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }

    /// The canonical (v3) form of every successfully parsed rule parses back to itself.
    #[test]
    fn canonical_form_round_trips() {
        for (input, syntax, want) in CASES {
            if let K(_) = want {
                let first = parse_rule(input, *syntax).unwrap().to_string();
                if first.contains("```") {
                    continue; // a value containing a backtick cannot be shown in backticks
                }
                let again = parse_rule(&first, V3).unwrap_or_else(|e| panic!("{first}: {e}"));
                assert_eq!(again.to_string(), first, "from {input:?}");
            }
        }
    }

    #[test]
    fn error_display_and_syntax_parsing() {
        let e = parse_rule("Hots(`a`)", V3).unwrap_err();
        assert!(e
            .to_string()
            .starts_with("invalid rule at column 1: unknown matcher \"Hots\""));
        assert_eq!("v3".parse::<RuleSyntax>(), Ok(V3));
        assert_eq!("V2".parse::<RuleSyntax>(), Ok(V2));
        assert_eq!(" v2 ".parse::<RuleSyntax>(), Ok(V2));
        let err = "v4".parse::<RuleSyntax>().unwrap_err();
        assert!(err.contains("\"v3\"") && err.contains("\"v2\""), "{err}");
        assert_eq!(RuleSyntax::default(), V3);
    }

    struct Req {
        method: Method,
        host: &'static str,
        path: &'static str,
        query: Option<&'static str>,
        headers: HeaderMap,
        ip: IpAddr,
    }

    impl Req {
        fn new(host: &'static str, path: &'static str) -> Self {
            Req {
                method: Method::GET,
                host,
                path,
                query: None,
                headers: HeaderMap::new(),
                ip: "10.1.2.3".parse().unwrap(),
            }
        }
        fn query(mut self, q: &'static str) -> Self {
            self.query = Some(q);
            self
        }
        fn header(mut self, k: &'static str, v: &'static str) -> Self {
            self.headers.append(k, v.parse().unwrap());
            self
        }
        fn method(mut self, m: Method) -> Self {
            self.method = m;
            self
        }
        fn ip(mut self, ip: &str) -> Self {
            self.ip = ip.parse().unwrap();
            self
        }
        fn view(&self) -> RequestView<'_> {
            RequestView {
                method: &self.method,
                host: self.host,
                path: self.path,
                query: self.query,
                headers: &self.headers,
                client_ip: self.ip,
            }
        }
    }

    fn check(rule: &str, syntax: RuleSyntax, cases: &[(Req, bool)]) {
        let m = parse_rule(rule, syntax).unwrap_or_else(|e| panic!("{rule}: {e}"));
        for (req, want) in cases {
            let got = m.matches(&req.view()).unwrap();
            assert_eq!(
                got, *want,
                "{rule} ({syntax:?}) on {} {}{:?}",
                req.host, req.path, req.query
            );
        }
    }

    #[test]
    fn v2_templates_match_like_gorilla() {
        check(
            "HostRegexp(`{sub:[a-z]+}.example.com`)",
            V2,
            &[
                (Req::new("api.example.com", "/"), true),
                (Req::new("api.v2.example.com", "/"), false),
                (Req::new("example.com", "/"), false),
                (Req::new("api.example.com.evil.org", "/"), false),
                (Req::new("apixexample.com", "/"), false),
            ],
        );
        check(
            "HostRegexp(`{sub}.example.com`)",
            V2,
            &[
                (Req::new("a-1.example.com", "/"), true),
                (Req::new("a.b.example.com", "/"), false),
            ],
        );
        check(
            "HostRegexp(`{sub:[a-z]+}.Example.COM`)",
            V2,
            &[(Req::new("api.example.com", "/"), true)],
        );
        check(
            "Path(`/users/{id:[0-9]+}`)",
            V2,
            &[
                (Req::new("h", "/users/42"), true),
                (Req::new("h", "/users/42/x"), false),
                (Req::new("h", "/users/abc"), false),
                (Req::new("h", "/x/users/42"), false),
            ],
        );
        check(
            "Path(`/users/{name}`)",
            V2,
            &[
                (Req::new("h", "/users/bob"), true),
                (Req::new("h", "/users/bob/x"), false),
                (Req::new("h", "/users/"), false),
            ],
        );
        check(
            "PathPrefix(`/api/{version}/`)",
            V2,
            &[
                (Req::new("h", "/api/v1/users"), true),
                (Req::new("h", "/api/v1/"), true),
                (Req::new("h", "/api/v1"), false),
                (Req::new("h", "/v/api/v1/"), false),
            ],
        );
        check(
            "Path(`/a.b`)",
            V2,
            &[
                (Req::new("h", "/a.b"), true),
                (Req::new("h", "/axb"), false),
            ],
        );
        check(
            "Query(`id={id:[0-9]+}`)",
            V2,
            &[
                (Req::new("h", "/").query("id=12"), true),
                (Req::new("h", "/").query("id=x"), false),
                (Req::new("h", "/").query("id=12x"), false),
            ],
        );
        check(
            "Query(`a=1`, `b=`)",
            V2,
            &[
                (Req::new("h", "/").query("a=1&b=zzz"), true),
                (Req::new("h", "/").query("b&a=1"), true),
                (Req::new("h", "/").query("a=1"), false),
                (Req::new("h", "/").query("a=2&b=1"), false),
            ],
        );
        check(
            "Headers(`X-A`, `1`, `X-B`, `2`)",
            V2,
            &[
                (
                    Req::new("h", "/").header("x-a", "1").header("x-b", "2"),
                    true,
                ),
                (Req::new("h", "/").header("x-a", "1"), false),
            ],
        );
        check(
            "Method(`get`, `post`)",
            V2,
            &[
                (Req::new("h", "/"), true),
                (Req::new("h", "/").method(Method::POST), true),
                (Req::new("h", "/").method(Method::PUT), false),
            ],
        );
        check(
            "Host(`A.com`, `b.COM.`) && PathPrefix(`/x`)",
            V2,
            &[
                (Req::new("a.com", "/x/1"), true),
                (Req::new("b.com", "/x"), true),
                (Req::new("c.com", "/x"), false),
                (Req::new("a.com", "/y"), false),
            ],
        );
        check(
            "ClientIP(`192.168.0.0/16`, `10.1.2.3`)",
            V2,
            &[
                (Req::new("h", "/"), true),
                (Req::new("h", "/").ip("192.168.9.9"), true),
                (Req::new("h", "/").ip("::ffff:192.168.9.9"), true),
                (Req::new("h", "/").ip("10.1.2.4"), false),
            ],
        );
    }

    #[test]
    fn v3_matchers_match_like_traefik() {
        check(
            "Host(`API.Example.COM.`)",
            V3,
            &[
                (Req::new("api.example.com", "/"), true),
                (Req::new("www.example.com", "/"), false),
            ],
        );
        check(
            "Query(`mobile`)",
            V3,
            &[
                (Req::new("h", "/").query("mobile"), true),
                (Req::new("h", "/").query("mobile="), true),
                (Req::new("h", "/").query("mobile=true"), false),
                (Req::new("h", "/").query("other"), false),
            ],
        );
        check(
            "HostRegexp(`^API\\.example\\.com$`)",
            V3,
            &[(Req::new("api.example.com", "/"), false)],
        );
        check(
            "HostRegexp(`^api\\.example\\.com$`)",
            V3,
            &[(Req::new("api.example.com", "/"), true)],
        );
        check(
            "Host(`*`)",
            V3,
            &[
                (Req::new("api.example.com", "/"), true),
                (Req::new("", "/x"), true),
            ],
        );
        check(
            "PathRegexp(`^/products/(shoes|socks)/[0-9]+$`)",
            V3,
            &[
                (Req::new("h", "/products/shoes/31"), true),
                (Req::new("h", "/products/hats/31"), false),
            ],
        );
        check(
            "PathRegexp(`\\.png$`)",
            V3,
            &[(Req::new("h", "/a/b.png"), true)],
        );
        check(
            "HeaderRegexp(`Content-Type`, `^application/(json|yaml)$`)",
            V3,
            &[
                (
                    Req::new("h", "/").header("content-type", "application/yaml"),
                    true,
                ),
                (
                    Req::new("h", "/").header("content-type", "application/yaml; x"),
                    false,
                ),
            ],
        );
        check(
            "!Host(`a.com`) && PathPrefix(`/p`) || Method(`POST`)",
            V3,
            &[
                (Req::new("b.com", "/p"), true),
                (Req::new("a.com", "/p"), false),
                (Req::new("a.com", "/p").method(Method::POST), true),
            ],
        );
        check(
            "Host(`*.example.com`)",
            V3,
            &[
                (Req::new("a.example.com", "/"), true),
                (Req::new("example.com", "/"), false),
            ],
        );
    }

    #[test]
    fn hostile_nesting_is_an_error_not_a_stack_overflow() {
        let deep = format!("{}Host(`a`){}", "(".repeat(10_000), ")".repeat(10_000));
        let e = parse_rule(&deep, V3).unwrap_err();
        assert_eq!(e.column, MAX_DEPTH + 1);
        assert!(e.message.contains("nested too deeply"), "{e}");

        let bangs = format!("{}Host(`a`)", "!".repeat(10_000));
        let e = parse_rule(&bangs, V3).unwrap_err();
        assert_eq!(e.column, MAX_DEPTH + 1);

        let ok = format!(
            "{}Host(`a`){}",
            "(!".repeat(MAX_DEPTH / 2),
            ")".repeat(MAX_DEPTH / 2)
        );
        assert!(parse_rule(&ok, V3).is_ok());

        // Long flat chains are capped, and the largest allowed tree can be used on a test thread.
        let chain = vec!["Host(`a.com`)"; MAX_MATCHERS + 1].join(" && ");
        let e = parse_rule(&chain, V3).unwrap_err();
        assert!(e.message.contains("too many matchers"), "{e}");
        let chain = vec!["Host(`a.com`)"; MAX_MATCHERS].join(" || ");
        let m = parse_rule(&chain, V3).unwrap();
        assert_eq!(m.to_string(), chain);
        assert!(m.matches(&Req::new("b.com", "/").view()).is_ok());
        drop(m);
        let hosts = vec!["`a.com`"; MAX_MATCHERS + 1].join(",");
        assert!(parse_rule(&format!("Host({hosts})"), V2).is_err());
    }

    /// Deterministic mangling of valid rules: nothing may panic, and every error column lies
    /// inside the input (or just past its end).
    #[test]
    fn mangled_rules_never_panic() {
        let seeds = [
            "Host(`example.com`) && PathPrefix(`/api`)",
            "!(Host(`a`) || Host(\"b\\x41\")) && Method(`GET`)",
            "HostRegexp(`{sub:[a-z]{2}}.x.com`, `y.com`) || Path(`/a/{id:[0-9]+}`)",
            "Headers(`X-A`, `1`) && Query(`a=1`, `id={id}`) && ClientIP(`10.0.0.0/8`)",
            "HeaderRegexp(`X`, `^v(1|2)$`) || QueryRegexp(`k`, `\\d+`) || ClientIP(`::1`)",
            "PathRegexp(\"^/caf\\u00e9/[0-9]+$\") && Query(`m`)",
        ];
        let inserts = [
            "(", ")", "`", "\"", "\\", "!", "&", "|", "{", "}", ",", "é", "\0", "'", "=", " ",
        ];
        let mut variants: Vec<String> = Vec::new();
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |n: usize| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            usize::try_from(state >> 33).unwrap() % n.max(1)
        };
        for seed in seeds {
            let chars: Vec<char> = seed.chars().collect();
            for cut in 0..chars.len() {
                variants.push(chars[..cut].iter().collect());
            }
            for _ in 0..60 {
                let mut c = chars.clone();
                match next(4) {
                    0 => {
                        c.remove(next(c.len()));
                    }
                    1 => {
                        let i = next(c.len());
                        for ch in inserts[next(inserts.len())].chars().rev() {
                            c.insert(i, ch);
                        }
                    }
                    2 => {
                        let i = next(c.len().saturating_sub(1));
                        c.swap(i, i + 1);
                    }
                    _ => {
                        let i = next(c.len());
                        let j = next(c.len());
                        let (lo, hi) = (i.min(j), i.max(j));
                        let dup: Vec<char> = c[lo..hi].to_vec();
                        c.splice(hi..hi, dup);
                    }
                }
                variants.push(c.into_iter().collect());
            }
        }
        assert!(variants.len() >= 200, "only {} variants", variants.len());
        for v in &variants {
            for syntax in [V3, V2] {
                if let Err(e) = parse_rule(v, syntax) {
                    let max = v.chars().count() + 1;
                    assert!(
                        (1..=max).contains(&e.column),
                        "{v:?}: column {} > {max}",
                        e.column
                    );
                    assert!(!e.message.is_empty());
                }
            }
        }
    }

    /// Run with `cargo test --release -- --ignored --nocapture` to see the parse cost.
    #[test]
    #[ignore]
    fn typical_rule_parses_fast() {
        let rule = "Host(`a.com`) && PathPrefix(`/api`)";
        let n = 100_000u32;
        let start = std::time::Instant::now();
        for _ in 0..n {
            std::hint::black_box(parse_rule(std::hint::black_box(rule), V3).unwrap());
        }
        let per = start.elapsed() / n;
        println!("parse_rule: {per:?} per rule");
        assert!(per < std::time::Duration::from_micros(10), "{per:?}");
    }
}
