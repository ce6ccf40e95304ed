//! Circuit breaker middleware in the style of Traefik's `circuitBreaker`.
//!
//! Owns the trip expression (parsed once), the rolling window of request outcomes and the
//! closed -> open -> recovering -> closed state machine. Invariants: the window covers at most
//! `check_period` (`WINDOW_BUCKETS` slots) and its running totals always equal the sum of its
//! live slots; the breaker trips only with at least `MIN_SAMPLES` samples in the window; the
//! window is emptied on every state change so old traffic cannot re-trip a fresh state. Must
//! never: block (the mutex is held for O(histogram) work at most), read the clock itself
//! (callers pass `now`), or panic on any expression text.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The expression is only evaluated when the window holds at least this many samples, so a
/// couple of early failures cannot open the circuit.
pub const MIN_SAMPLES: u64 = 10;
/// Slots of the rolling window; each covers `check_period / WINDOW_BUCKETS`.
pub const WINDOW_BUCKETS: usize = 10;

/// Latency histogram: exact below `SUB` µs, then `SUB` sub-buckets per power of two
/// (about 6% resolution). Latencies at or above 2^`MAX_EXP` µs (~19 h) share the last bucket.
const SUB_BITS: u32 = 4;
const SUB: u64 = 1 << SUB_BITS;
const MAX_EXP: u32 = 36;
const HIST_LEN: usize = (SUB + (MAX_EXP - SUB_BITS) as u64 * SUB) as usize;

// ---------------------------------------------------------------------------------------------
// Expression

#[derive(Debug, Clone, Copy, PartialEq)]
enum Metric {
    NetworkErrorRatio,
    /// Codes in `[from, to)` divided by codes in `[div_from, div_to)`.
    ResponseCodeRatio {
        from: u16,
        to: u16,
        div_from: u16,
        div_to: u16,
    },
    /// Quantile in (0, 100].
    LatencyAtQuantileMs(f64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CmpOp {
    Gt,
    Ge,
    Lt,
    Le,
    Eq,
    Ne,
}

impl CmpOp {
    fn apply(self, a: f64, b: f64) -> bool {
        match self {
            CmpOp::Gt => a > b,
            CmpOp::Ge => a >= b,
            CmpOp::Lt => a < b,
            CmpOp::Le => a <= b,
            CmpOp::Eq => a == b,
            CmpOp::Ne => a != b,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Or(Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Cmp(Metric, CmpOp, f64),
}

impl Expr {
    fn uses_latency(&self) -> bool {
        match self {
            Expr::Or(a, b) | Expr::And(a, b) => a.uses_latency() || b.uses_latency(),
            Expr::Cmp(m, _, _) => matches!(m, Metric::LatencyAtQuantileMs(_)),
        }
    }

    fn eval(&self, w: &Window) -> bool {
        match self {
            Expr::Or(a, b) => a.eval(w) || b.eval(w),
            Expr::And(a, b) => a.eval(w) && b.eval(w),
            Expr::Cmp(m, op, v) => op.apply(w.metric(*m), *v),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Num(f64),
    LParen,
    RParen,
    Comma,
    Cmp(CmpOp),
    And,
    Or,
    End,
}

fn describe_tok(t: &Tok) -> String {
    match t {
        Tok::Ident(s) => format!("{s:?}"),
        Tok::Num(n) => format!("number {n}"),
        Tok::LParen => "'('".to_owned(),
        Tok::RParen => "')'".to_owned(),
        Tok::Comma => "','".to_owned(),
        Tok::Cmp(_) => "a comparison operator".to_owned(),
        Tok::And => "'&&'".to_owned(),
        Tok::Or => "'||'".to_owned(),
        Tok::End => "end of expression".to_owned(),
    }
}

/// Tokens with their 1-based column (in characters).
fn tokenize(src: &str) -> Result<Vec<(Tok, usize)>, String> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        let col = i + 1;
        let next = chars.get(i + 1).copied();
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let two = |tok: Tok, out: &mut Vec<(Tok, usize)>| out.push((tok, col));
        match (c, next) {
            ('(', _) => out.push((Tok::LParen, col)),
            (')', _) => out.push((Tok::RParen, col)),
            (',', _) => out.push((Tok::Comma, col)),
            ('&', Some('&')) => {
                two(Tok::And, &mut out);
                i += 1;
            }
            ('|', Some('|')) => {
                two(Tok::Or, &mut out);
                i += 1;
            }
            ('&', _) => return Err(format!("column {col}: expected '&&'")),
            ('|', _) => return Err(format!("column {col}: expected '||'")),
            ('>', Some('=')) | ('<', Some('=')) | ('=', Some('=')) | ('!', Some('=')) => {
                let op = match c {
                    '>' => CmpOp::Ge,
                    '<' => CmpOp::Le,
                    '=' => CmpOp::Eq,
                    _ => CmpOp::Ne,
                };
                two(Tok::Cmp(op), &mut out);
                i += 1;
            }
            ('>', _) => out.push((Tok::Cmp(CmpOp::Gt), col)),
            ('<', _) => out.push((Tok::Cmp(CmpOp::Lt), col)),
            ('=', _) => return Err(format!("column {col}: expected '=='")),
            ('!', _) => return Err(format!("column {col}: expected '!='")),
            _ if c.is_ascii_digit()
                || c == '.'
                || (c == '-' && next.is_some_and(|n| n.is_ascii_digit() || n == '.')) =>
            {
                let start = i;
                i += 1;
                while chars
                    .get(i)
                    .is_some_and(|d| d.is_ascii_digit() || *d == '.')
                {
                    i += 1;
                }
                let text: String = chars.get(start..i).unwrap_or_default().iter().collect();
                let n: f64 = text
                    .parse()
                    .map_err(|_| format!("column {col}: invalid number {text:?}"))?;
                out.push((Tok::Num(n), col));
                continue;
            }
            _ if c.is_ascii_alphabetic() || c == '_' => {
                let start = i;
                while chars
                    .get(i)
                    .is_some_and(|d| d.is_ascii_alphanumeric() || *d == '_')
                {
                    i += 1;
                }
                let text: String = chars.get(start..i).unwrap_or_default().iter().collect();
                out.push((Tok::Ident(text), col));
                continue;
            }
            _ => return Err(format!("column {col}: unexpected character {c:?}")),
        }
        i += 1;
    }
    out.push((Tok::End, chars.len() + 1));
    Ok(out)
}

struct Parser {
    toks: Vec<(Tok, usize)>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> (&Tok, usize) {
        match self.toks.get(self.pos) {
            Some((t, c)) => (t, *c),
            None => (&Tok::End, self.toks.last().map_or(1, |(_, c)| *c)),
        }
    }

    fn bump(&mut self) -> (Tok, usize) {
        let (t, c) = self.peek();
        let out = (t.clone(), c);
        if self.pos < self.toks.len() {
            self.pos += 1;
        }
        out
    }

    fn expect(&mut self, want: &Tok, what: &str) -> Result<(), String> {
        let (t, col) = self.peek();
        if t == want {
            self.bump();
            Ok(())
        } else {
            Err(format!(
                "column {col}: expected {what}, found {}",
                describe_tok(t)
            ))
        }
    }

    fn or_expr(&mut self) -> Result<Expr, String> {
        let mut left = self.and_expr()?;
        while self.peek().0 == &Tok::Or {
            self.bump();
            let right = self.and_expr()?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and_expr(&mut self) -> Result<Expr, String> {
        let mut left = self.primary()?;
        while self.peek().0 == &Tok::And {
            self.bump();
            let right = self.primary()?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn primary(&mut self) -> Result<Expr, String> {
        let (tok, col) = self.bump();
        match tok {
            Tok::LParen => {
                let inner = self.or_expr()?;
                self.expect(&Tok::RParen, "')'")?;
                Ok(inner)
            }
            Tok::Ident(name) => {
                let metric = self.call(&name, col)?;
                let (tok, col) = self.bump();
                let Tok::Cmp(op) = tok else {
                    return Err(format!("column {col}: expected a comparison operator"));
                };
                let (tok, col) = self.bump();
                let Tok::Num(value) = tok else {
                    return Err(format!("column {col}: expected a number"));
                };
                Ok(Expr::Cmp(metric, op, value))
            }
            other => Err(format!(
                "column {col}: expected a function or '(', found {}",
                describe_tok(&other)
            )),
        }
    }

    /// Parses `(args)` after a function name.
    fn call(&mut self, name: &str, name_col: usize) -> Result<Metric, String> {
        const KNOWN: [&str; 3] = [
            "NetworkErrorRatio",
            "ResponseCodeRatio",
            "LatencyAtQuantileMS",
        ];
        if !KNOWN.contains(&name) {
            return Err(format!(
                "column {name_col}: unknown function {name:?} (expected NetworkErrorRatio, \
                 ResponseCodeRatio or LatencyAtQuantileMS)"
            ));
        }
        self.expect(&Tok::LParen, &format!("'(' after {name}"))?;
        let mut args = Vec::new();
        if self.peek().0 != &Tok::RParen {
            loop {
                let (tok, col) = self.bump();
                let Tok::Num(n) = tok else {
                    return Err(format!("column {col}: expected a number"));
                };
                args.push((n, col));
                let (tok, col) = self.bump();
                match tok {
                    Tok::Comma => continue,
                    Tok::RParen => break,
                    _ => return Err(format!("column {col}: expected ',' or ')'")),
                }
            }
        } else {
            self.bump();
        }
        let arity = |want: usize| {
            if args.len() == want {
                Ok(())
            } else {
                Err(format!(
                    "column {name_col}: {name} takes {want} argument{}, got {}",
                    if want == 1 { "" } else { "s" },
                    args.len()
                ))
            }
        };
        match name {
            "NetworkErrorRatio" => {
                arity(0)?;
                Ok(Metric::NetworkErrorRatio)
            }
            "ResponseCodeRatio" => {
                arity(4)?;
                let mut codes = [0u16; 4];
                for (slot, (n, col)) in codes.iter_mut().zip(args.iter()) {
                    if n.fract() != 0.0 || *n < 0.0 || *n > 1000.0 {
                        return Err(format!(
                            "column {col}: status code must be an integer in 0..=1000"
                        ));
                    }
                    *slot = *n as u16;
                }
                let [from, to, div_from, div_to] = codes;
                Ok(Metric::ResponseCodeRatio {
                    from,
                    to,
                    div_from,
                    div_to,
                })
            }
            "LatencyAtQuantileMS" => {
                arity(1)?;
                let (q, col) = args.first().copied().unwrap_or((0.0, name_col));
                if !(q > 0.0 && q <= 100.0) {
                    return Err(format!("column {col}: quantile must be in (0, 100]"));
                }
                Ok(Metric::LatencyAtQuantileMs(q))
            }
            _ => Err(format!("column {name_col}: unknown function {name:?}")),
        }
    }
}

fn parse(src: &str) -> Result<Expr, String> {
    let toks = tokenize(src)?;
    let mut p = Parser { toks, pos: 0 };
    if p.peek().0 == &Tok::End {
        return Err("column 1: empty expression".to_owned());
    }
    let expr = p.or_expr()?;
    let (tok, col) = p.peek();
    if tok != &Tok::End {
        return Err(format!(
            "column {col}: expected '&&', '||' or end of expression, found {}",
            describe_tok(tok)
        ));
    }
    Ok(expr)
}

// ---------------------------------------------------------------------------------------------
// Rolling window

fn hist_index(latency: Duration) -> usize {
    let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
    if us < SUB {
        return us as usize;
    }
    let exp = 63 - us.leading_zeros();
    if exp >= MAX_EXP {
        return HIST_LEN - 1;
    }
    let sub = (us >> (exp - SUB_BITS)) & (SUB - 1);
    (SUB + u64::from(exp - SUB_BITS) * SUB + sub) as usize
}

/// Midpoint of a histogram bucket, in milliseconds.
fn hist_value_ms(index: usize) -> f64 {
    let i = index as u64;
    if i < SUB {
        return i as f64 / 1000.0;
    }
    let exp = (i - SUB) / SUB + u64::from(SUB_BITS);
    let sub = (i - SUB) % SUB;
    let width = 1u64 << (exp - u64::from(SUB_BITS));
    let low = (1u64 << exp) + sub * width;
    (low as f64 + width as f64 / 2.0) / 1000.0
}

#[derive(Debug, Clone, Default)]
struct Stats {
    total: u64,
    net_errors: u64,
    codes: BTreeMap<u16, u64>,
    /// Empty when the expression does not use latency.
    latency: Vec<u64>,
}

impl Stats {
    fn new(with_latency: bool) -> Stats {
        Stats {
            latency: if with_latency {
                vec![0; HIST_LEN]
            } else {
                Vec::new()
            },
            ..Stats::default()
        }
    }

    fn add(&mut self, status: Option<u16>, latency: Duration) {
        self.total += 1;
        match status {
            None => self.net_errors += 1,
            Some(code) => *self.codes.entry(code).or_insert(0) += 1,
        }
        if let Some(slot) = self.latency.get_mut(hist_index(latency)) {
            *slot += 1;
        }
    }

    fn subtract(&mut self, other: &Stats) {
        self.total = self.total.saturating_sub(other.total);
        self.net_errors = self.net_errors.saturating_sub(other.net_errors);
        for (code, n) in &other.codes {
            if let Some(mine) = self.codes.get_mut(code) {
                *mine = mine.saturating_sub(*n);
                if *mine == 0 {
                    self.codes.remove(code);
                }
            }
        }
        for (mine, theirs) in self.latency.iter_mut().zip(other.latency.iter()) {
            *mine = mine.saturating_sub(*theirs);
        }
    }

    fn clear(&mut self) {
        self.total = 0;
        self.net_errors = 0;
        self.codes.clear();
        self.latency.iter_mut().for_each(|n| *n = 0);
    }
}

#[derive(Debug)]
struct Slot {
    epoch: u64,
    stats: Stats,
}

#[derive(Debug)]
struct Window {
    slots: Vec<Slot>,
    /// Sum of all slots.
    sum: Stats,
}

impl Window {
    fn new(with_latency: bool) -> Window {
        Window {
            slots: (0..WINDOW_BUCKETS)
                .map(|_| Slot {
                    epoch: 0,
                    stats: Stats::new(with_latency),
                })
                .collect(),
            sum: Stats::new(with_latency),
        }
    }

    /// Forgets slots older than the window ending at `epoch`.
    fn expire(&mut self, epoch: u64) {
        for slot in &mut self.slots {
            if slot.stats.total > 0 && slot.epoch + WINDOW_BUCKETS as u64 <= epoch {
                self.sum.subtract(&slot.stats);
                slot.stats.clear();
            }
        }
    }

    fn add(&mut self, epoch: u64, status: Option<u16>, latency: Duration) {
        self.expire(epoch);
        let index = (epoch % WINDOW_BUCKETS as u64) as usize;
        if let Some(slot) = self.slots.get_mut(index) {
            if slot.epoch < epoch {
                self.sum.subtract(&slot.stats);
                slot.stats.clear();
                slot.epoch = epoch;
            }
            // A late sample for an older epoch lands in the newer slot: close enough.
            slot.stats.add(status, latency);
            self.sum.add(status, latency);
        }
    }

    fn reset(&mut self) {
        for slot in &mut self.slots {
            slot.stats.clear();
        }
        self.sum.clear();
    }

    fn metric(&self, m: Metric) -> f64 {
        let s = &self.sum;
        let ratio = |num: u64, den: u64| {
            if den == 0 {
                0.0
            } else {
                num as f64 / den as f64
            }
        };
        let in_range = |from: u16, to: u16| -> u64 {
            if from >= to {
                return 0;
            }
            s.codes.range(from..to).map(|(_, n)| *n).sum()
        };
        match m {
            Metric::NetworkErrorRatio => ratio(s.net_errors, s.total),
            Metric::ResponseCodeRatio {
                from,
                to,
                div_from,
                div_to,
            } => ratio(in_range(from, to), in_range(div_from, div_to)),
            Metric::LatencyAtQuantileMs(q) => {
                if s.total == 0 {
                    return 0.0;
                }
                let rank = ((q / 100.0) * s.total as f64).ceil().max(1.0) as u64;
                let mut seen = 0u64;
                for (index, n) in s.latency.iter().enumerate() {
                    seen += n;
                    if seen >= rank {
                        return hist_value_ms(index);
                    }
                }
                0.0
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Breaker

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Closed,
    Open { until: Instant },
    Recovering { since: Instant },
}

#[derive(Debug)]
struct Inner {
    phase: Phase,
    window: Window,
}

/// Opens when the expression holds over the recent window; see the module comment.
pub struct CircuitBreaker {
    source: String,
    expr: Expr,
    check_period: Duration,
    fallback: Duration,
    recovery: Duration,
    /// `check_period / WINDOW_BUCKETS`, at least 1 ns.
    slot_len: Duration,
    origin: Instant,
    inner: Mutex<Inner>,
}

impl CircuitBreaker {
    /// Parses `expression` (Traefik syntax); errors name the column.
    pub fn new(
        expression: &str,
        check_period: Duration,
        fallback: Duration,
        recovery: Duration,
    ) -> Result<CircuitBreaker, String> {
        let expr = parse(expression)
            .map_err(|e| format!("circuit breaker expression {expression:?}: {e}"))?;
        if check_period.is_zero() {
            return Err("circuit breaker: check period must be greater than zero".to_owned());
        }
        let slot_len = (check_period / WINDOW_BUCKETS as u32).max(Duration::from_nanos(1));
        let with_latency = expr.uses_latency();
        Ok(CircuitBreaker {
            source: expression.to_owned(),
            expr,
            check_period,
            fallback,
            recovery,
            slot_len,
            origin: Instant::now(),
            inner: Mutex::new(Inner {
                phase: Phase::Closed,
                window: Window::new(with_latency),
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn epoch(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.origin).as_nanos();
        u64::try_from(elapsed / self.slot_len.as_nanos().max(1)).unwrap_or(u64::MAX)
    }

    /// Applies the time-driven transitions (open -> recovering -> closed).
    fn advance(&self, inner: &mut Inner, now: Instant) {
        if let Phase::Open { until } = inner.phase {
            if now >= until {
                inner.phase = Phase::Recovering { since: until };
                inner.window.reset();
            }
        }
        if let Phase::Recovering { since } = inner.phase {
            if now.saturating_duration_since(since) >= self.recovery {
                inner.phase = Phase::Closed;
                inner.window.reset();
            }
        }
    }

    /// Whether this request may go to a server.
    pub fn allow(&self, now: Instant) -> bool {
        let mut inner = self.lock();
        self.advance(&mut inner, now);
        match inner.phase {
            Phase::Closed => true,
            Phase::Open { .. } => false,
            Phase::Recovering { since } => {
                drop(inner);
                let share = now.saturating_duration_since(since).as_secs_f64()
                    / self.recovery.as_secs_f64();
                fastrand::f64() < share
            }
        }
    }

    /// Records one finished request (`status` None = network error).
    pub fn record(&self, status: Option<u16>, latency: Duration, now: Instant) {
        let epoch = self.epoch(now);
        let mut inner = self.lock();
        self.advance(&mut inner, now);
        if let Phase::Open { .. } = inner.phase {
            // Requests let through before the trip finishing now say nothing new.
            return;
        }
        inner.window.add(epoch, status, latency);
        if inner.window.sum.total >= MIN_SAMPLES && self.expr.eval(&inner.window) {
            inner.phase = Phase::Open {
                until: now.checked_add(self.fallback).unwrap_or(now),
            };
            inner.window.reset();
        }
    }

    /// `"closed"`, `"open"` or `"recovering"`.
    pub fn state(&self, now: Instant) -> &'static str {
        let mut inner = self.lock();
        self.advance(&mut inner, now);
        match inner.phase {
            Phase::Closed => "closed",
            Phase::Open { .. } => "open",
            Phase::Recovering { .. } => "recovering",
        }
    }

    /// The expression as written.
    pub fn expression(&self) -> &str {
        &self.source
    }
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.lock();
        f.debug_struct("CircuitBreaker")
            .field("expression", &self.source)
            .field("check_period", &self.check_period)
            .field("fallback", &self.fallback)
            .field("recovery", &self.recovery)
            .field("phase", &inner.phase)
            .field("samples", &inner.window.sum.total)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn cb(expr: &str) -> CircuitBreaker {
        CircuitBreaker::new(
            expr,
            Duration::from_secs(10),
            Duration::from_secs(5),
            Duration::from_secs(10),
        )
        .unwrap()
    }

    fn parse_err(expr: &str) -> String {
        parse(expr).unwrap_err()
    }

    #[test]
    fn send_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<CircuitBreaker>();
    }

    #[test]
    fn parses_valid_expressions() {
        assert_eq!(
            parse("NetworkErrorRatio() > 0.5").unwrap(),
            Expr::Cmp(Metric::NetworkErrorRatio, CmpOp::Gt, 0.5)
        );
        assert_eq!(
            parse("ResponseCodeRatio(500, 600, 0, 600) >= .25").unwrap(),
            Expr::Cmp(
                Metric::ResponseCodeRatio {
                    from: 500,
                    to: 600,
                    div_from: 0,
                    div_to: 600
                },
                CmpOp::Ge,
                0.25
            )
        );
        // && binds tighter than ||; parentheses override.
        let e = parse(
            "NetworkErrorRatio() > 0.1 || LatencyAtQuantileMS(50.0) > 100 && NetworkErrorRatio() != 0",
        )
        .unwrap();
        assert!(matches!(e, Expr::Or(_, ref b) if matches!(**b, Expr::And(_, _))));
        let e = parse(
            "(NetworkErrorRatio() > 0.1 || LatencyAtQuantileMS(99) <= 100) && NetworkErrorRatio() == 0",
        )
        .unwrap();
        assert!(matches!(e, Expr::And(ref a, _) if matches!(**a, Expr::Or(_, _))));
        assert!(e.uses_latency());
        assert!(parse("NetworkErrorRatio() < -1").is_ok());
    }

    #[test]
    fn parse_errors_name_column() {
        assert_eq!(
            parse_err("NetworkErrorRatio() 0.5"),
            "column 21: expected a comparison operator"
        );
        assert_eq!(
            parse_err("NetworkErrorRatio > 0.5"),
            "column 19: expected '(' after NetworkErrorRatio, found a comparison operator"
        );
        assert_eq!(
            parse_err("NetworkErrorRatio() > 0.5 & x"),
            "column 27: expected '&&'"
        );
        assert_eq!(
            parse_err("NetworkErrorRatio() = 0.5"),
            "column 21: expected '=='"
        );
        assert_eq!(
            parse_err("NetworkErrorRatio() > x"),
            "column 23: expected a number"
        );
        assert_eq!(
            parse_err("Foo() > 1"),
            "column 1: unknown function \"Foo\" (expected NetworkErrorRatio, ResponseCodeRatio or LatencyAtQuantileMS)"
        );
        assert_eq!(
            parse_err("ResponseCodeRatio(500, 600) > 0.5"),
            "column 1: ResponseCodeRatio takes 4 arguments, got 2"
        );
        assert_eq!(
            parse_err("LatencyAtQuantileMS(0) > 1"),
            "column 21: quantile must be in (0, 100]"
        );
        assert_eq!(
            parse_err("LatencyAtQuantileMS(101) > 1"),
            "column 21: quantile must be in (0, 100]"
        );
        assert_eq!(
            parse_err("(NetworkErrorRatio() > 0.5"),
            "column 27: expected ')', found end of expression"
        );
        assert_eq!(
            parse_err("NetworkErrorRatio() > 0.5 NetworkErrorRatio() > 0.5"),
            "column 27: expected '&&', '||' or end of expression, found \"NetworkErrorRatio\""
        );
        assert_eq!(parse_err("  "), "column 1: empty expression");
        assert_eq!(
            parse_err("NetworkErrorRatio() > 0.5 $"),
            "column 27: unexpected character '$'"
        );
        assert_eq!(
            parse_err("NetworkErrorRatio() > 1.2.3"),
            "column 23: invalid number \"1.2.3\""
        );
        let full = CircuitBreaker::new("x", MS, MS, MS).unwrap_err();
        assert!(
            full.starts_with("circuit breaker expression \"x\": column 1:"),
            "{full}"
        );
        assert!(CircuitBreaker::new("NetworkErrorRatio() > 0.5", Duration::ZERO, MS, MS).is_err());
    }

    #[test]
    fn trips_on_half_network_errors_with_enough_samples() {
        let b = cb("NetworkErrorRatio() > 0.4");
        let t0 = Instant::now();
        // 9 samples, 5 failures: above the ratio but under MIN_SAMPLES.
        for i in 0..9u64 {
            let status = if i % 2 == 0 { None } else { Some(200) };
            b.record(status, MS, t0 + MS * i as u32);
        }
        assert_eq!(b.state(t0 + 10 * MS), "closed");
        assert!(b.allow(t0 + 10 * MS));
        // The 10th sample (a success, ratio 5/10 = 0.5) makes the window big enough.
        b.record(Some(200), MS, t0 + 10 * MS);
        assert_eq!(b.state(t0 + 10 * MS), "open");
        assert!(!b.allow(t0 + 11 * MS));
    }

    #[test]
    fn does_not_trip_below_threshold_or_on_old_samples() {
        let b = cb("NetworkErrorRatio() >= 0.5");
        let t0 = Instant::now();
        for i in 0..20u32 {
            let status = if i % 3 == 0 { None } else { Some(200) };
            b.record(status, MS, t0 + MS * i);
        }
        assert_eq!(b.state(t0 + 20 * MS), "closed");

        // Failures spread so that the window (10 s) never holds more than 9 of them.
        let b = cb("NetworkErrorRatio() > 0.5");
        for i in 0..30u32 {
            b.record(None, MS, t0 + Duration::from_millis(1200) * i);
        }
        assert_eq!(b.state(t0 + Duration::from_secs(40)), "closed");
    }

    #[test]
    fn stays_open_for_fallback_then_recovers() {
        let b = cb("NetworkErrorRatio() > 0.5");
        let t0 = Instant::now();
        for _ in 0..10 {
            b.record(None, MS, t0);
        }
        // Open for the 5 s fallback.
        assert_eq!(b.state(t0 + Duration::from_millis(4999)), "open");
        assert!((0..100).all(|_| !b.allow(t0 + Duration::from_millis(4999))));
        // Late results of requests started before the trip do not matter.
        b.record(Some(200), MS, t0 + Duration::from_secs(1));

        // Recovering: share of allowed requests ramps up over the 10 s recovery.
        let early = t0 + Duration::from_secs(5) + Duration::from_secs(1);
        assert_eq!(b.state(early), "recovering");
        let allowed_early = (0..2000).filter(|_| b.allow(early)).count();
        let late = t0 + Duration::from_secs(5) + Duration::from_secs(9);
        let allowed_late = (0..2000).filter(|_| b.allow(late)).count();
        // Expected about 10% and 90%.
        assert!((100..300).contains(&allowed_early), "{allowed_early}");
        assert!((1700..1900).contains(&allowed_late), "{allowed_late}");

        // Fully closed after the recovery.
        let done = t0 + Duration::from_secs(15);
        assert_eq!(b.state(done), "closed");
        assert!((0..100).all(|_| b.allow(done)));
    }

    #[test]
    fn reopens_when_tripping_during_recovery() {
        let b = cb("NetworkErrorRatio() > 0.5");
        let t0 = Instant::now();
        for _ in 0..10 {
            b.record(None, MS, t0);
        }
        let r = t0 + Duration::from_secs(6);
        assert_eq!(b.state(r), "recovering");
        for _ in 0..10 {
            b.record(None, MS, r);
        }
        assert_eq!(b.state(r), "open");
        assert_eq!(b.state(r + Duration::from_millis(4999)), "open");
        assert_eq!(b.state(r + Duration::from_secs(5)), "recovering");
    }

    #[test]
    fn response_code_ratio_and_latency_quantile() {
        let t0 = Instant::now();
        let b = cb("ResponseCodeRatio(500, 600, 0, 600) > 0.25");
        for i in 0..20u32 {
            // Failures last in each group of five, so no prefix of >= 10 exceeds 0.2.
            let status = if i % 5 == 4 { 503 } else { 200 };
            b.record(Some(status), MS, t0);
        }
        // 4/20 = 0.2.
        assert_eq!(b.state(t0), "closed");
        for _ in 0..4 {
            b.record(Some(500), MS, t0);
        }
        // 8/24 = 0.33.
        assert_eq!(b.state(t0), "open");

        let b = cb("LatencyAtQuantileMS(50) > 100");
        for _ in 0..10 {
            b.record(Some(200), Duration::from_millis(50), t0);
        }
        for _ in 0..9 {
            b.record(Some(200), Duration::from_millis(500), t0);
        }
        assert_eq!(b.state(t0), "closed");
        // Median moves to the slow side.
        b.record(Some(200), Duration::from_millis(500), t0);
        b.record(Some(200), Duration::from_millis(500), t0);
        assert_eq!(b.state(t0), "open");
    }

    #[test]
    fn histogram_resolution() {
        for ms in [1u64, 7, 50, 100, 999, 12_345] {
            let v = hist_value_ms(hist_index(Duration::from_millis(ms)));
            let err = (v - ms as f64).abs() / ms as f64;
            assert!(err < 0.07, "{ms} ms -> {v}");
        }
        assert_eq!(hist_value_ms(hist_index(Duration::from_micros(5))), 0.005);
        assert_eq!(hist_index(Duration::from_secs(1_000_000)), HIST_LEN - 1);
    }

    #[test]
    fn window_forgets_expired_slots() {
        let mut w = Window::new(false);
        w.add(0, None, MS);
        w.add(5, Some(200), MS);
        assert_eq!(w.sum.total, 2);
        w.add(10, Some(200), MS);
        // Epoch 0 fell out of the 10-slot window.
        assert_eq!(w.sum.total, 2);
        assert_eq!(w.sum.net_errors, 0);
        w.add(25, Some(200), MS);
        assert_eq!(w.sum.total, 1);
        assert_eq!(w.sum.codes.get(&200), Some(&1));
    }
}
