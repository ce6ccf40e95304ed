//! Circuit breaker middleware in the style of Traefik's `circuitBreaker`.
//!
//! Owns the trip expression (parsed once), the rolling window of request outcomes and the
//! closed -> open -> recovering -> closed state machine. Invariants: the window covers at most
//! `check_period` (`WINDOW_BUCKETS` slots) and its running totals equal the sum of its live
//! slots (exactly once no record is in progress); it keeps only the counters the expression
//! reads (total, network errors, the status ranges named by `ResponseCodeRatio`, the latency
//! histogram only for `LatencyAtQuantileMS`); the breaker trips only with at least
//! `MIN_SAMPLES` samples in the window; the window is emptied on every state change so old
//! traffic cannot re-trip a fresh state.
//!
//! No lock on the request path: `allow` is one atomic load while closed, and `record` is a few
//! relaxed atomic increments plus the expression over the running sums. The phase and its
//! deadline are one `AtomicU64` changed by compare-and-swap (so exactly one thread performs each
//! transition); a short mutex is taken only on the rare events — the window moving to a new slot
//! (at most once per `check_period / WINDOW_BUCKETS`) and emptying it on a transition. Must
//! never: block on anything but that mutex, read the clock itself (callers pass `now`), or panic
//! on any expression text.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
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

/// Which counters a window keeps, fixed by the expression: the sample total, network errors,
/// one count per distinct status range `ResponseCodeRatio` uses, and the latency histogram only
/// when a quantile is asked for.
#[derive(Debug, Clone, Default)]
struct Layout {
    /// `[from, to)` status ranges, each with from < to.
    ranges: Vec<(u16, u16)>,
    latency: bool,
}

const TOTAL: usize = 0;
const NET_ERRORS: usize = 1;
const FIRST_RANGE: usize = 2;

impl Layout {
    fn of(expr: &Expr) -> Layout {
        fn walk(e: &Expr, l: &mut Layout) {
            match e {
                Expr::Or(a, b) | Expr::And(a, b) => {
                    walk(a, l);
                    walk(b, l);
                }
                Expr::Cmp(Metric::NetworkErrorRatio | Metric::LatencyAtQuantileMs(_), _, _) => {}
                Expr::Cmp(
                    Metric::ResponseCodeRatio {
                        from,
                        to,
                        div_from,
                        div_to,
                    },
                    _,
                    _,
                ) => {
                    for r in [(*from, *to), (*div_from, *div_to)] {
                        if r.0 < r.1 && !l.ranges.contains(&r) {
                            l.ranges.push(r);
                        }
                    }
                }
            }
        }
        let mut l = Layout {
            ranges: Vec::new(),
            latency: expr.uses_latency(),
        };
        walk(expr, &mut l);
        l
    }

    fn first_hist(&self) -> usize {
        FIRST_RANGE + self.ranges.len()
    }

    fn width(&self) -> usize {
        self.first_hist() + if self.latency { HIST_LEN } else { 0 }
    }

    fn range_index(&self, from: u16, to: u16) -> Option<usize> {
        self.ranges
            .iter()
            .position(|r| *r == (from, to))
            .map(|i| FIRST_RANGE + i)
    }
}

/// A row of counters (one per `Layout` slot).
#[derive(Debug)]
struct Counters(Box<[AtomicU64]>);

impl Counters {
    fn new(width: usize) -> Counters {
        Counters((0..width).map(|_| AtomicU64::new(0)).collect())
    }

    fn get(&self, i: usize) -> u64 {
        let v = self.0.get(i).map_or(0, |c| c.load(Ordering::Relaxed));
        // A running sum can only be "negative" (wrapped) in theory; read that as empty.
        if v > u64::MAX / 2 {
            0
        } else {
            v
        }
    }
}

/// One `check_period / WINDOW_BUCKETS` time slot.
#[derive(Debug)]
struct Slot {
    /// The slot's epoch; `EMPTY` once drained. Written only under `Window::rotate`.
    epoch: AtomicU64,
    counts: Counters,
}

const EMPTY: u64 = u64::MAX;

/// The rolling window: `WINDOW_BUCKETS` slots plus their running sum, all atomics.
///
/// Recording a sample is lock-free: the counters it touches are incremented in the running sum
/// first, then (release) in the slot of the newest epoch. Moving to a new epoch (at most once
/// per slot length) and emptying the window (on a state change) take the `rotate` mutex: a
/// drained slot's counters are swapped to 0 (acquire) and subtracted from the sum. That order
/// keeps every sample counted in the sum exactly as long as it is in a slot, whatever the
/// interleaving; a sample racing a rotation lands in the newer slot.
#[derive(Debug)]
struct Window {
    layout: Layout,
    slots: Vec<Slot>,
    sum: Counters,
    /// The newest epoch the slots were rotated to; samples of older epochs count in it.
    head: AtomicU64,
    rotate: Mutex<()>,
}

impl Window {
    fn new(layout: Layout) -> Window {
        let width = layout.width();
        Window {
            slots: (0..WINDOW_BUCKETS)
                .map(|_| Slot {
                    epoch: AtomicU64::new(EMPTY),
                    counts: Counters::new(width),
                })
                .collect(),
            sum: Counters::new(width),
            head: AtomicU64::new(0),
            rotate: Mutex::new(()),
            layout,
        }
    }

    fn total(&self) -> u64 {
        self.sum.get(TOTAL)
    }

    fn add(&self, epoch: u64, status: Option<u16>, latency: Duration) {
        if epoch > self.head.load(Ordering::Acquire) {
            self.advance(epoch);
        }
        let head = self.head.load(Ordering::Acquire);
        let Some(slot) = self.slots.get((head % WINDOW_BUCKETS as u64) as usize) else {
            return;
        };
        let bump = |i: usize| {
            if let (Some(sum), Some(own)) = (self.sum.0.get(i), slot.counts.0.get(i)) {
                sum.fetch_add(1, Ordering::Relaxed);
                own.fetch_add(1, Ordering::Release);
            }
        };
        bump(TOTAL);
        match status {
            None => bump(NET_ERRORS),
            Some(code) => {
                for (i, (from, to)) in self.layout.ranges.iter().enumerate() {
                    if (*from..*to).contains(&code) {
                        bump(FIRST_RANGE + i);
                    }
                }
            }
        }
        if self.layout.latency {
            bump(self.layout.first_hist() + hist_index(latency));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.rotate.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes `epoch` the newest slot: forgets slots that fell out of the window ending there.
    fn advance(&self, epoch: u64) {
        let _rotating = self.lock();
        if epoch <= self.head.load(Ordering::Acquire) {
            return;
        }
        let current = (epoch % WINDOW_BUCKETS as u64) as usize;
        for (i, slot) in self.slots.iter().enumerate() {
            let e = slot.epoch.load(Ordering::Relaxed);
            let expired = e != EMPTY && e.saturating_add(WINDOW_BUCKETS as u64) <= epoch;
            if i == current {
                if e != epoch {
                    self.drain(slot);
                    slot.epoch.store(epoch, Ordering::Relaxed);
                }
            } else if expired {
                self.drain(slot);
                slot.epoch.store(EMPTY, Ordering::Relaxed);
            }
        }
        self.head.store(epoch, Ordering::Release);
    }

    /// Moves a slot's counts out of the running sum.
    fn drain(&self, slot: &Slot) {
        for (own, sum) in slot.counts.0.iter().zip(self.sum.0.iter()) {
            if own.load(Ordering::Relaxed) != 0 {
                let n = own.swap(0, Ordering::Acquire);
                sum.fetch_sub(n, Ordering::Relaxed);
            }
        }
    }

    /// Empties the window (every slot drained).
    fn reset(&self) {
        let _rotating = self.lock();
        for slot in &self.slots {
            self.drain(slot);
        }
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
            self.layout.range_index(from, to).map_or(0, |i| s.get(i))
        };
        match m {
            Metric::NetworkErrorRatio => ratio(s.get(NET_ERRORS), s.get(TOTAL)),
            Metric::ResponseCodeRatio {
                from,
                to,
                div_from,
                div_to,
            } => ratio(in_range(from, to), in_range(div_from, div_to)),
            Metric::LatencyAtQuantileMs(q) => {
                let first = self.layout.first_hist();
                let counts = || (0..HIST_LEN).map(|b| s.get(first + b));
                // The histogram's own total: it may differ from TOTAL by in-flight records.
                let total: u64 = counts().sum();
                if total == 0 {
                    return 0.0;
                }
                let rank = ((q / 100.0) * total as f64).ceil().max(1.0) as u64;
                let mut seen = 0u64;
                for (index, n) in counts().enumerate() {
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
    /// Nanoseconds since the breaker's origin at which the fallback ends.
    Open {
        until: u64,
    },
    /// Nanoseconds since the origin at which recovery began.
    Recovering {
        since: u64,
    },
}

const TAG_SHIFT: u32 = 62;
const VALUE_MASK: u64 = (1 << TAG_SHIFT) - 1;

impl Phase {
    /// One word: the phase in the top two bits, its instant (capped at ~146 years) below.
    fn encode(self) -> u64 {
        match self {
            Phase::Closed => 0,
            Phase::Open { until } => (1 << TAG_SHIFT) | until.min(VALUE_MASK),
            Phase::Recovering { since } => (2 << TAG_SHIFT) | since.min(VALUE_MASK),
        }
    }

    fn decode(word: u64) -> Phase {
        let value = word & VALUE_MASK;
        match word >> TAG_SHIFT {
            1 => Phase::Open { until: value },
            2 => Phase::Recovering { since: value },
            _ => Phase::Closed,
        }
    }
}

/// Opens when the expression holds over the recent window; see the module comment.
pub struct CircuitBreaker {
    source: String,
    expr: Expr,
    check_period: Duration,
    fallback: Duration,
    recovery: Duration,
    /// `check_period / WINDOW_BUCKETS` in nanoseconds, at least 1.
    slot_nanos: u64,
    /// Instants are kept as nanoseconds since this (earlier ones count as this).
    origin: Instant,
    /// The `Phase`, encoded; changed only by compare-and-swap.
    phase: AtomicU64,
    window: Window,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
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
        let slot_nanos = nanos(check_period / WINDOW_BUCKETS as u32).max(1);
        let layout = Layout::of(&expr);
        // A little before now, so instants taken just before the breaker existed (a replayed
        // clock) still order correctly.
        let now = Instant::now();
        let origin = [3600, 60, 1]
            .into_iter()
            .find_map(|s| now.checked_sub(Duration::from_secs(s)))
            .unwrap_or(now);
        Ok(CircuitBreaker {
            source: expression.to_owned(),
            expr,
            check_period,
            fallback,
            recovery,
            slot_nanos,
            origin,
            phase: AtomicU64::new(Phase::Closed.encode()),
            window: Window::new(layout),
        })
    }

    fn at(&self, now: Instant) -> u64 {
        nanos(now.saturating_duration_since(self.origin)).min(VALUE_MASK)
    }

    /// Applies the time-driven transitions (open -> recovering -> closed) and returns the
    /// phase at `now`. Lock-free; the rare transition empties the window.
    fn advance(&self, now: u64) -> Phase {
        loop {
            let word = self.phase.load(Ordering::Acquire);
            let next = match Phase::decode(word) {
                Phase::Open { until } if now >= until => Phase::Recovering { since: until },
                Phase::Recovering { since }
                    if now.saturating_sub(since) >= nanos(self.recovery) =>
                {
                    Phase::Closed
                }
                phase => return phase,
            };
            self.transition(word, next);
        }
    }

    /// Moves from the phase encoded as `from` to `to`, unless another thread moved first.
    fn transition(&self, from: u64, to: Phase) -> bool {
        let moved = self
            .phase
            .compare_exchange(from, to.encode(), Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if moved {
            self.window.reset();
        }
        moved
    }

    /// Whether this request may go to a server.
    pub fn allow(&self, now: Instant) -> bool {
        let at = self.at(now);
        match self.advance(at) {
            Phase::Closed => true,
            Phase::Open { .. } => false,
            Phase::Recovering { since } => {
                let share = at.saturating_sub(since) as f64 / self.recovery.as_nanos() as f64;
                fastrand::f64() < share
            }
        }
    }

    /// Records one finished request (`status` None = network error).
    pub fn record(&self, status: Option<u16>, latency: Duration, now: Instant) {
        let at = self.at(now);
        let phase = self.advance(at);
        if let Phase::Open { .. } = phase {
            // Requests let through before the trip finishing now say nothing new.
            return;
        }
        self.window.add(at / self.slot_nanos, status, latency);
        if self.window.total() >= MIN_SAMPLES && self.expr.eval(&self.window) {
            let until = at.saturating_add(nanos(self.fallback));
            self.transition(phase.encode(), Phase::Open { until });
        }
    }

    /// `"closed"`, `"open"` or `"recovering"`.
    pub fn state(&self, now: Instant) -> &'static str {
        match self.advance(self.at(now)) {
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
        f.debug_struct("CircuitBreaker")
            .field("expression", &self.source)
            .field("check_period", &self.check_period)
            .field("fallback", &self.fallback)
            .field("recovery", &self.recovery)
            .field("phase", &Phase::decode(self.phase.load(Ordering::Relaxed)))
            .field("samples", &self.window.total())
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
        let w = Window::new(Layout {
            ranges: vec![(200, 201)],
            latency: false,
        });
        let ok = || w.sum.get(w.layout.range_index(200, 201).unwrap());
        w.add(0, None, MS);
        w.add(5, Some(200), MS);
        assert_eq!(w.total(), 2);
        w.add(10, Some(200), MS);
        // Epoch 0 fell out of the 10-slot window.
        assert_eq!(w.total(), 2);
        assert_eq!(w.sum.get(NET_ERRORS), 0);
        w.add(25, Some(200), MS);
        assert_eq!(w.total(), 1);
        assert_eq!(ok(), 1);
        // A late sample (older epoch) counts in the newest slot; a reset empties everything.
        w.add(3, Some(200), MS);
        assert_eq!((w.total(), ok()), (2, 2));
        w.reset();
        assert_eq!((w.total(), ok()), (0, 0));
        w.add(26, None, MS);
        assert_eq!(w.total(), 1);
    }

    #[test]
    fn layout_keeps_only_what_the_expression_reads() {
        let l = Layout::of(&parse("NetworkErrorRatio() > 0.5").unwrap());
        assert_eq!((l.ranges.len(), l.latency, l.width()), (0, false, 2));
        let l = Layout::of(
            &parse(
                "ResponseCodeRatio(500, 600, 0, 600) > 0.5 || ResponseCodeRatio(500, 600, 0, 0) > 1 \
                 || LatencyAtQuantileMS(99) > 10",
            )
            .unwrap(),
        );
        assert_eq!(l.ranges, vec![(500, 600), (0, 600)]);
        assert!(l.latency);
        assert_eq!(l.width(), 4 + HIST_LEN);
        // An empty range reads as 0, as the code map did.
        let b = cb("ResponseCodeRatio(500, 600, 600, 500) > 0.5");
        for _ in 0..20 {
            b.record(Some(503), MS, Instant::now());
        }
        assert_eq!(b.state(Instant::now()), "closed");
    }

    #[test]
    fn concurrent_records_keep_the_sums_exact() {
        let b = std::sync::Arc::new(
            CircuitBreaker::new(
                "ResponseCodeRatio(500, 600, 0, 600) > 0.99 || LatencyAtQuantileMS(50) > 100000",
                Duration::from_millis(10),
                Duration::from_secs(5),
                Duration::from_secs(10),
            )
            .unwrap(),
        );
        let t0 = Instant::now();
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let b = std::sync::Arc::clone(&b);
                std::thread::spawn(move || {
                    for i in 0..5000u32 {
                        // Time moves on (slots rotate) while every thread records.
                        let now = t0 + Duration::from_micros(u64::from(i) * 10 + t);
                        assert!(b.allow(now));
                        b.record(Some(200), MS, now);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        // The running sums match the slots exactly. The window holds at least the last 10 ms
        // of the thread that finished last (late records of slower threads count in the newest
        // slot, so possibly more).
        let w = &b.window;
        for i in 0..w.layout.width() {
            let in_slots: u64 = w
                .slots
                .iter()
                .map(|s| s.counts.0[i].load(Ordering::Relaxed))
                .sum();
            assert_eq!(w.sum.0[i].load(Ordering::Relaxed), in_slots, "counter {i}");
        }
        assert!((1000..=20_000).contains(&w.total()), "{}", w.total());
        assert_eq!(b.state(t0 + Duration::from_millis(50)), "closed");
    }
}
