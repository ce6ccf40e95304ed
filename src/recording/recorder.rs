//! Live request recording (`run --record FILE`, `POST /api/record/start`): the proxy workers
//! hand finished request heads to one `Recorder`, which writes them as JSON lines in the
//! `record` format.
//!
//! Owns the on/off state, the scope (`all` / `marked`), redaction, rotation and the one writer
//! thread per recording. Invariants: when off, the request path pays one atomic load; records
//! go over a bounded channel with `try_send`, so a slow or failing disk never blocks or slows
//! traffic (a full channel counts a drop); a write error (disk full, rotation failure) stops
//! the recording itself, logged once and kept in the status; ids are 1-based per start.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwapOption;
use serde::{Deserialize, Serialize};
use tracing::{error, info};

use super::format::RecordedRequest;

/// Records waiting for the writer; past this, records are dropped (and counted).
const QUEUE: usize = 8192;
/// The writer flushes at least this often.
const FLUSH_EVERY: Duration = Duration::from_millis(200);

/// Which requests a recording takes.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    Serialize,
    Deserialize,
    clap::ValueEnum,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Every request except routes marked `.record(false)` (requests matching no route too).
    #[default]
    All,
    /// Only routes marked `.record(true)`.
    Marked,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::All => "all",
            Scope::Marked => "marked",
        }
    }

    /// Whether a request is recorded: `route_mark` is the route's `.record(...)`, `None` also
    /// when no route matched.
    pub fn takes(self, route_mark: Option<bool>) -> bool {
        match self {
            Scope::All => route_mark != Some(false),
            Scope::Marked => route_mark == Some(true),
        }
    }
}

/// The headers redacted unless `--record.redact` says otherwise.
pub const DEFAULT_REDACT: [&str; 4] = [
    "authorization",
    "cookie",
    "set-cookie",
    "proxy-authorization",
];

/// Recording settings from the configuration (what `start` uses unless told otherwise).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordConfig {
    /// Start recording at boot into this file.
    pub file: Option<PathBuf>,
    pub scope: Scope,
    /// Lowercase header names whose values become `<redacted>`.
    pub redact: Vec<String>,
    /// Body bytes recorded per request (0: none).
    pub body_bytes: usize,
    /// Rotate once the file would grow past this many bytes.
    pub max_size: u64,
    /// Rotated files kept (FILE.1 … FILE.keep).
    pub keep: usize,
}

impl Default for RecordConfig {
    fn default() -> Self {
        RecordConfig {
            file: None,
            scope: Scope::All,
            redact: DEFAULT_REDACT.iter().map(|s| s.to_string()).collect(),
            body_bytes: 0,
            max_size: 100 * 1024 * 1024,
            keep: 3,
        }
    }
}

/// `10MiB`, `512KiB`, `1GB`, `4096` → bytes (k/M/G are 1000s, Ki/Mi/Gi 1024s).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid size {s:?} (write e.g. 10MiB, 512KiB, 1000000)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "ki" | "kib" => 1 << 10,
        "m" | "mb" => 1000 * 1000,
        "mi" | "mib" => 1 << 20,
        "g" | "gb" => 1000 * 1000 * 1000,
        "gi" | "gib" => 1 << 30,
        _ => {
            return Err(format!(
                "invalid size unit in {s:?} (use B, KiB, MiB, GiB, kB, MB, GB)"
            ))
        }
    };
    let bytes = n * mult as f64;
    if !bytes.is_finite() || bytes < 1.0 {
        return Err(format!("size {s:?} must be at least 1 byte"));
    }
    Ok(bytes as u64)
}

/// `authorization,cookie` → the list; `none` (or empty) → nothing redacted.
pub fn parse_redact(s: &str) -> Vec<String> {
    if s.trim().eq_ignore_ascii_case("none") {
        return Vec::new();
    }
    s.split(',')
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty())
        .collect()
}

/// The name rotated file `n` gets: `FILE.n`.
pub fn rotated_name(file: &Path, n: usize) -> PathBuf {
    let mut s = file.as_os_str().to_os_string();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// Shifts FILE.(keep-1) → FILE.keep … FILE → FILE.1 (FILE.keep is replaced; keep 0 removes FILE).
pub fn rotate(file: &Path, keep: usize) -> std::io::Result<()> {
    if keep == 0 {
        return std::fs::remove_file(file);
    }
    for n in (1..keep).rev() {
        let from = rotated_name(file, n);
        if from.exists() {
            std::fs::rename(&from, rotated_name(file, n + 1))?;
        }
    }
    std::fs::rename(file, rotated_name(file, 1))
}

/// What `GET /api/record` shows.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RecordStatus {
    /// `on` or `off`.
    pub state: &'static str,
    pub file: Option<String>,
    pub scope: &'static str,
    /// Records written or queued since the last start.
    pub recorded: u64,
    /// Records dropped because the writer fell behind.
    pub dropped: u64,
    /// Bytes written since the last start.
    pub bytes: u64,
    /// Why the last recording stopped by itself (or could not start).
    pub error: Option<String>,
}

/// One running recording: the channel to its writer.
struct Live {
    tx: SyncSender<RecordedRequest>,
    scope: Scope,
}

#[derive(Default)]
struct Control {
    file: Option<PathBuf>,
    scope: Scope,
    error: Option<String>,
    writer: Option<std::thread::JoinHandle<()>>,
}

/// Counters shared with the writer thread.
#[derive(Default)]
struct Counters {
    seq: AtomicU64,
    dropped: AtomicU64,
    bytes: AtomicU64,
}

/// Shared by every proxy worker and the admin API.
pub struct Recorder {
    on: AtomicBool,
    live: ArcSwapOption<Live>,
    counters: Arc<Counters>,
    control: Mutex<Control>,
    pub config: RecordConfig,
}

/// What a request head looked like on arrival (captured only while recording is on).
pub struct Pending {
    pub started: Instant,
    pub record: RecordedRequest,
    /// The matched route's `.record(...)`.
    pub mark: Option<bool>,
    /// The first body bytes as they stream to the server (`--record.body-bytes`).
    pub tap: Option<Arc<BodyTap>>,
}

/// The first `cap` bytes of a request body, copied as the body streams to the server; the
/// stream itself is never held up or changed.
#[derive(Debug)]
pub struct BodyTap {
    cap: usize,
    state: Mutex<TapState>,
}

#[derive(Debug, Default)]
struct TapState {
    bytes: Vec<u8>,
    seen: u64,
    ended: bool,
}

impl BodyTap {
    pub fn new(cap: usize) -> BodyTap {
        BodyTap {
            cap,
            state: Mutex::new(TapState::default()),
        }
    }

    fn state(&self) -> MutexGuard<'_, TapState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A data frame passed on to the server.
    pub fn data(&self, chunk: &[u8]) {
        let mut st = self.state();
        st.seen += chunk.len() as u64;
        let room = self.cap.saturating_sub(st.bytes.len());
        let take = room.min(chunk.len());
        if let Some(head) = chunk.get(..take) {
            st.bytes.extend_from_slice(head);
        }
    }

    /// The body ended.
    pub fn end(&self) {
        self.state().ended = true;
    }

    /// The bytes copied so far, and whether they are less than the whole body (past the cap,
    /// or the body had not ended when the response head came back).
    pub fn taken(&self) -> (Vec<u8>, bool) {
        let st = self.state();
        let truncated = st.seen > st.bytes.len() as u64 || !st.ended;
        (st.bytes.clone(), truncated)
    }
}

impl Recorder {
    pub fn new(config: RecordConfig) -> Arc<Recorder> {
        Arc::new(Recorder {
            on: AtomicBool::new(false),
            live: ArcSwapOption::empty(),
            counters: Arc::new(Counters::default()),
            control: Mutex::new(Control {
                scope: config.scope,
                file: config.file.clone(),
                ..Control::default()
            }),
            config,
        })
    }

    /// A recorder that never records (dry runs, tests).
    pub fn off() -> Arc<Recorder> {
        Recorder::new(RecordConfig::default())
    }

    /// Request body bytes to record (0: none).
    pub fn body_bytes(&self) -> usize {
        self.config.body_bytes
    }

    /// The one check on the request path.
    #[inline]
    pub fn is_on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    fn control(&self) -> MutexGuard<'_, Control> {
        self.control.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts (or restarts) recording into `file` (default: the configured one) with `scope`
    /// (default: the configured one). The file is opened for appending before this returns.
    pub fn start(
        self: &Arc<Self>,
        file: Option<PathBuf>,
        scope: Option<Scope>,
    ) -> Result<RecordStatus, String> {
        self.stop();
        let mut c = self.control();
        let Some(file) = file.or_else(|| c.file.clone()) else {
            return Err("no recording file: give {\"file\": \"...\"} or --record".to_string());
        };
        let scope = scope.unwrap_or(self.config.scope);
        let opened = open(&file);
        let (out, size) = match opened {
            Ok(x) => x,
            Err(e) => {
                // The file is not remembered: a later start without a file uses the last one
                // that worked, never this one again.
                let msg = format!("cannot open recording {}: {e}", file.display());
                error!(error = %msg, "recording not started");
                c.error = Some(msg.clone());
                return Err(msg);
            }
        };
        c.file = Some(file.clone());
        c.scope = scope;
        c.error = None;
        self.counters.seq.store(0, Ordering::Relaxed);
        self.counters.dropped.store(0, Ordering::Relaxed);
        self.counters.bytes.store(0, Ordering::Relaxed);
        let (tx, rx) = sync_channel(QUEUE);
        let writer = Writer {
            file: file.clone(),
            out: BufWriter::new(out),
            size,
            max_size: self.config.max_size,
            keep: self.config.keep,
            counters: self.counters.clone(),
        };
        let me = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("switchyard-recorder".into())
            .spawn(move || {
                if let Err(msg) = writer.run(rx) {
                    error!(error = %msg, "recording stopped");
                    if let Some(r) = me.upgrade() {
                        r.failed(msg);
                    }
                }
            });
        match spawned {
            Ok(h) => c.writer = Some(h),
            Err(e) => {
                let msg = format!("cannot start the recording writer: {e}");
                c.error = Some(msg.clone());
                return Err(msg);
            }
        }
        self.live.store(Some(Arc::new(Live { tx, scope })));
        self.on.store(true, Ordering::Relaxed);
        info!(file = %file.display(), scope = scope.as_str(), "recording requests");
        drop(c);
        Ok(self.status())
    }

    /// Stops recording; returns once the writer flushed and closed the file.
    pub fn stop(&self) -> RecordStatus {
        self.on.store(false, Ordering::Relaxed);
        self.live.store(None);
        let writer = self.control().writer.take();
        if let Some(w) = writer {
            let _ = w.join();
        }
        self.status()
    }

    /// Called by the writer thread on a write error.
    fn failed(&self, msg: String) {
        self.on.store(false, Ordering::Relaxed);
        self.live.store(None);
        self.control().error = Some(msg);
    }

    pub fn status(&self) -> RecordStatus {
        let c = self.control();
        RecordStatus {
            state: if self.is_on() { "on" } else { "off" },
            file: c.file.as_ref().map(|f| f.display().to_string()),
            scope: c.scope.as_str(),
            recorded: self.counters.seq.load(Ordering::Relaxed),
            dropped: self.counters.dropped.load(Ordering::Relaxed),
            bytes: self.counters.bytes.load(Ordering::Relaxed),
            error: c.error.clone(),
        }
    }

    /// Whether a header's value is recorded as `<redacted>`.
    pub fn redacts(&self, name: &str) -> bool {
        self.config
            .redact
            .iter()
            .any(|r| r.eq_ignore_ascii_case(name))
    }

    /// Hands a finished request to the writer (never blocks): skipped when the scope does not
    /// take it, counted as dropped when the writer is behind.
    pub fn submit(&self, pending: Pending) {
        let Some(live) = self.live.load_full() else {
            return;
        };
        if !live.scope.takes(pending.mark) {
            return;
        }
        let mut rec = pending.record;
        rec.id = self.counters.seq.fetch_add(1, Ordering::Relaxed) + 1;
        match live.tx.try_send(rec) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.counters.seq.fetch_sub(1, Ordering::Relaxed);
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.live.store(None);
        if let Some(w) = self.control().writer.take() {
            let _ = w.join();
        }
    }
}

/// `time` of a record: RFC 3339, milliseconds, UTC.
pub fn now_text() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

fn open(file: &Path) -> std::io::Result<(File, u64)> {
    let f = OpenOptions::new().create(true).append(true).open(file)?;
    let size = f.metadata().map(|m| m.len()).unwrap_or(0);
    Ok((f, size))
}

struct Writer {
    file: PathBuf,
    out: BufWriter<File>,
    size: u64,
    max_size: u64,
    keep: usize,
    counters: Arc<Counters>,
}

impl Writer {
    /// Writes until every sender is gone (stop), or a write fails (the error is returned).
    fn run(mut self, rx: Receiver<RecordedRequest>) -> Result<(), String> {
        let mut last_flush = Instant::now();
        loop {
            match rx.recv_timeout(FLUSH_EVERY) {
                Ok(rec) => self.write(&rec)?,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return self.flush(),
            }
            if last_flush.elapsed() >= FLUSH_EVERY {
                self.flush()?;
                last_flush = Instant::now();
            }
        }
    }

    fn flush(&mut self) -> Result<(), String> {
        self.out
            .flush()
            .map_err(|e| format!("cannot write recording {}: {e}", self.file.display()))
    }

    fn write(&mut self, rec: &RecordedRequest) -> Result<(), String> {
        let mut line = serde_json::to_vec(rec).map_err(|e| format!("cannot encode record: {e}"))?;
        line.push(b'\n');
        let len = line.len() as u64;
        if self.size > 0 && self.size + len > self.max_size && self.file.is_file() {
            self.flush()?;
            rotate(&self.file, self.keep)
                .map_err(|e| format!("cannot rotate recording {}: {e}", self.file.display()))?;
            let (f, size) = open(&self.file)
                .map_err(|e| format!("cannot reopen recording {}: {e}", self.file.display()))?;
            self.out = BufWriter::new(f);
            self.size = size;
        }
        self.out
            .write_all(&line)
            .map_err(|e| format!("cannot write recording {}: {e}", self.file.display()))?;
        self.size += len;
        self.counters.bytes.fetch_add(len, Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10MiB").unwrap(), 10 << 20);
        assert_eq!(parse_size("512KiB").unwrap(), 512 << 10);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("1 GB").unwrap(), 1_000_000_000);
        assert_eq!(parse_size("1.5k").unwrap(), 1500);
        assert!(parse_size("ten").is_err());
        assert!(parse_size("10 parsecs").is_err());
        assert!(parse_size("0").is_err());
    }

    #[test]
    fn redact_lists() {
        assert!(parse_redact("none").is_empty());
        assert_eq!(parse_redact("X-Token, cookie"), vec!["x-token", "cookie"]);
    }

    #[test]
    fn rotation_shifts_and_keeps() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("r.jsonl");
        assert_eq!(rotated_name(&f, 2), dir.path().join("r.jsonl.2"));
        for gen in 0..5 {
            std::fs::write(&f, format!("{gen}")).unwrap();
            rotate(&f, 3).unwrap();
        }
        assert!(!f.exists());
        let read = |n| std::fs::read_to_string(rotated_name(&f, n)).unwrap();
        assert_eq!(
            (read(1), read(2), read(3)),
            ("4".into(), "3".into(), "2".into())
        );
        assert!(!rotated_name(&f, 4).exists());
    }

    #[test]
    fn scopes() {
        assert!(Scope::All.takes(None) && Scope::All.takes(Some(true)));
        assert!(!Scope::All.takes(Some(false)));
        assert!(Scope::Marked.takes(Some(true)));
        assert!(!Scope::Marked.takes(None) && !Scope::Marked.takes(Some(false)));
    }
}
