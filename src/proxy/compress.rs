//! Response compression (Traefik's `compress` middleware): picks a content coding from the
//! request's `Accept-Encoding`, decides whether a response may be encoded, rewrites its headers
//! and wraps its body in a streaming encoder (gzip, brotli or zstd).
//!
//! Invariants: a body is never buffered whole; the encoder is flushed after every inbound data
//! frame, so long polling and server-sent chunks reach the client as they are produced, at the
//! cost of a few bytes of framing per flush. Trailers pass through after the encoder's tail.
//! Must never: encode a response that already has a content coding, a partial (206/Content-Range)
//! response, a bodiless response (HEAD, 1xx, 204, 304), or one marked `Cache-Control:
//! no-transform` (RFC 9111 §5.2.2.6 forbids intermediaries to transform it).

use std::collections::VecDeque;
use std::error::Error as StdError;
use std::io::{self, Write};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{
    ACCEPT_ENCODING, ACCEPT_RANGES, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_RANGE,
    CONTENT_TYPE, ETAG, VARY,
};
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body::{Body, Frame};

/// Error type of `CompressBody`: the inner body's error (converted with `.into()`) or an encoder
/// I/O error.
pub type BoxError = Box<dyn StdError + Send + Sync>;

pub use crate::middleware::compress::{CompressOptions, Encoding, DEFAULT_EXCLUDED_TYPES};

/// A q-value in thousandths (0..=1000), so comparisons are exact. `None` for a malformed value:
/// such an entry is ignored rather than guessed at.
fn parse_q(params: &str) -> Option<u16> {
    let mut q = 1000;
    for param in params.split(';') {
        let param = param.trim();
        if param.is_empty() {
            continue;
        }
        let (name, value) = param.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("q") {
            continue;
        }
        q = parse_qvalue(value.trim())?;
    }
    Some(q)
}

/// RFC 9110 §12.4.2: `0[.ddd]` or `1[.000]`.
fn parse_qvalue(v: &str) -> Option<u16> {
    let (int, frac) = match v.split_once('.') {
        Some((i, f)) => (i, f),
        None => (v, ""),
    };
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut thousandths: u16 = 0;
    let mut scale: u16 = 100;
    for b in frac.bytes() {
        thousandths += u16::from(b - b'0') * scale;
        scale /= 10;
    }
    match int {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// Picks an encoding from the request's Accept-Encoding values (all of them, comma lists,
/// q-values, q=0 excludes, "*" matches any, identity ignored). Client's highest q wins; ties
/// broken by `opts.encodings` order. None when nothing acceptable, including when the request
/// has no Accept-Encoding at all (like Traefik: no header, no compression).
///
/// An explicit entry for a coding overrides "*" for it; when a coding is listed twice the
/// higher q counts.
pub fn negotiate(accept: &HeaderMap, opts: &CompressOptions) -> Option<Encoding> {
    // Per known coding: explicit q; separately the "*" q.
    let mut explicit: [Option<u16>; 3] = [None; 3];
    let mut wildcard: Option<u16> = None;
    let slot = |e: Encoding| match e {
        Encoding::Gzip => 0usize,
        Encoding::Brotli => 1,
        Encoding::Zstd => 2,
    };
    for value in accept.get_all(ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else {
            continue;
        };
        for item in value.split(',') {
            let (token, params) = match item.split_once(';') {
                Some((t, p)) => (t.trim(), p),
                None => (item.trim(), ""),
            };
            if token.is_empty() {
                continue;
            }
            let Some(q) = parse_q(params) else {
                continue;
            };
            let target = if token == "*" {
                &mut wildcard
            } else if let Some(enc) = Encoding::parse(token) {
                match explicit.get_mut(slot(enc)) {
                    Some(s) => s,
                    None => continue,
                }
            } else {
                continue;
            };
            *target = Some(target.map_or(q, |old| old.max(q)));
        }
    }
    let mut best: Option<(Encoding, u16)> = None;
    for &enc in &opts.encodings {
        let q = explicit
            .get(slot(enc))
            .copied()
            .flatten()
            .or(wildcard)
            .unwrap_or(0);
        if q == 0 {
            continue;
        }
        // Strictly greater: an earlier (preferred) coding keeps a tie.
        if best.is_none_or(|(_, bq)| q > bq) {
            best = Some((enc, q));
        }
    }
    best.map(|(enc, _)| enc)
}

fn media_type_excluded(content_type: &str, excluded: &[String]) -> bool {
    let media = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    excluded.iter().any(|ex| {
        let ex = ex.trim().to_ascii_lowercase();
        match ex.strip_suffix("/*") {
            Some(top) => media.split_once('/').is_some_and(|(t, _)| t == top),
            None => media == ex,
        }
    })
}

/// Whether a response may be compressed: no Content-Encoding already (other than identity),
/// status not 1xx/204/206/304, not a HEAD response (caller passes is_head), no `Content-Range`,
/// no `Cache-Control: no-transform`, Content-Length unknown or >= min_size, content type not
/// excluded. A response without Content-Type is compressed (nothing is sniffed).
pub fn compressible(
    status: StatusCode,
    is_head: bool,
    headers: &HeaderMap,
    opts: &CompressOptions,
) -> bool {
    if is_head
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::PARTIAL_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return false;
    }
    if headers.contains_key(CONTENT_RANGE) {
        return false;
    }
    let encoded = headers.get_all(CONTENT_ENCODING).iter().any(|v| {
        v.to_str().map_or(true, |s| {
            s.split(',').any(|t| {
                let t = t.trim();
                !t.is_empty() && !t.eq_ignore_ascii_case("identity")
            })
        })
    });
    if encoded {
        return false;
    }
    let no_transform = headers.get_all(CACHE_CONTROL).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',')
                .any(|d| d.trim().eq_ignore_ascii_case("no-transform"))
        })
    });
    if no_transform {
        return false;
    }
    let length = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<u64>().ok());
    if length.is_some_and(|n| n < opts.min_size) {
        return false;
    }
    if let Some(ct) = headers.get(CONTENT_TYPE) {
        let ct = String::from_utf8_lossy(ct.as_bytes());
        if media_type_excluded(&ct, &opts.excluded_types) {
            return false;
        }
    }
    true
}

/// Adds `token` to the Vary header unless it (or `*`) is already listed; keeps one Vary line.
fn merge_vary(headers: &mut HeaderMap, token: &'static str) {
    let mut parts: Vec<String> = Vec::new();
    for v in headers.get_all(VARY) {
        let s = String::from_utf8_lossy(v.as_bytes());
        for t in s.split(',') {
            let t = t.trim();
            if !t.is_empty() {
                parts.push(t.to_owned());
            }
        }
    }
    if parts
        .iter()
        .any(|p| p == "*" || p.eq_ignore_ascii_case(token))
    {
        return;
    }
    parts.push(token.to_owned());
    if let Ok(v) = HeaderValue::from_str(&parts.join(", ")) {
        headers.insert(VARY, v);
    }
}

/// Rewrites response headers for `enc`: sets Content-Encoding, removes Content-Length and
/// Accept-Ranges, adds "Accept-Encoding" to Vary (merging with an existing Vary; not duplicated),
/// turns a strong ETag into a weak one (W/"..."): the encoded bytes differ from the
/// representation the origin tagged, so byte-for-byte equality no longer holds.
pub fn apply_headers(headers: &mut HeaderMap, enc: Encoding) {
    headers.insert(CONTENT_ENCODING, HeaderValue::from_static(enc.token()));
    headers.remove(CONTENT_LENGTH);
    headers.remove(ACCEPT_RANGES);
    merge_vary(headers, "Accept-Encoding");
    let weak = headers.get(ETAG).and_then(|v| {
        let b = v.as_bytes();
        if b.first() == Some(&b'"') {
            let mut w = Vec::with_capacity(b.len() + 2);
            w.extend_from_slice(b"W/");
            w.extend_from_slice(b);
            HeaderValue::from_bytes(&w).ok()
        } else {
            None
        }
    });
    if let Some(w) = weak {
        headers.insert(ETAG, w);
    }
}

const BROTLI_QUALITY: u32 = 5;
const BROTLI_LGWIN: u32 = 22;
const BROTLI_BUFFER: usize = 4096;
const ZSTD_LEVEL: i32 = 3;

/// The encoders write into a `Vec<u8>` whose contents are taken after every flush.
enum Encoder {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Brotli(Box<brotli::CompressorWriter<Vec<u8>>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

impl Encoder {
    fn new(enc: Encoding) -> io::Result<Encoder> {
        Ok(match enc {
            Encoding::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::default(),
            )),
            Encoding::Brotli => Encoder::Brotli(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                BROTLI_BUFFER,
                BROTLI_QUALITY,
                BROTLI_LGWIN,
            ))),
            Encoding::Zstd => {
                Encoder::Zstd(zstd::stream::write::Encoder::new(Vec::new(), ZSTD_LEVEL)?)
            }
        })
    }

    /// Writes `data`, flushes, and returns the compressed bytes ready so far.
    fn push(&mut self, data: &[u8]) -> io::Result<Bytes> {
        let out = match self {
            Encoder::Gzip(e) => {
                e.write_all(data)?;
                e.flush()?;
                e.get_mut()
            }
            Encoder::Brotli(e) => {
                e.write_all(data)?;
                e.flush()?;
                e.get_mut()
            }
            Encoder::Zstd(e) => {
                e.write_all(data)?;
                e.flush()?;
                e.get_mut()
            }
        };
        Ok(Bytes::from(std::mem::take(out)))
    }

    /// Ends the coded stream and returns its tail.
    fn finish(self) -> io::Result<Bytes> {
        let out = match self {
            Encoder::Gzip(e) => e.finish()?,
            // `into_inner` finishes the stream; writing into a Vec cannot fail.
            Encoder::Brotli(e) => e.into_inner(),
            Encoder::Zstd(e) => e.finish()?,
        };
        Ok(Bytes::from(out))
    }
}

/// A response body compressed on the fly; see the module comment for the flushing contract.
pub struct CompressBody<B> {
    inner: B,
    encoder: Option<Encoder>,
    /// An encoder that could not be built is reported on the first poll.
    init_error: Option<io::Error>,
    /// Frames to hand out before polling `inner` again (tail, trailers).
    queued: VecDeque<Frame<Bytes>>,
    /// `inner` ended (or the stream failed): only `queued` remains.
    done: bool,
}

impl<B> CompressBody<B> {
    pub fn new(inner: B, enc: Encoding) -> Self {
        let (encoder, init_error) = match Encoder::new(enc) {
            Ok(e) => (Some(e), None),
            Err(e) => (None, Some(e)),
        };
        CompressBody {
            inner,
            encoder,
            init_error,
            queued: VecDeque::new(),
            done: false,
        }
    }

    /// Finishes the encoder and queues its tail; `Err` ends the stream.
    fn finish_encoder(&mut self) -> Result<(), BoxError> {
        self.done = true;
        if let Some(enc) = self.encoder.take() {
            let tail = enc.finish()?;
            if !tail.is_empty() {
                self.queued.push_back(Frame::data(tail));
            }
        }
        Ok(())
    }
}

impl<B> std::fmt::Debug for CompressBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompressBody")
            .field("done", &self.done)
            .field("queued", &self.queued.len())
            .finish_non_exhaustive()
    }
}

impl<B> Body for CompressBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        if let Some(err) = this.init_error.take() {
            this.done = true;
            this.queued.clear();
            return Poll::Ready(Some(Err(err.into())));
        }
        loop {
            if let Some(frame) = this.queued.pop_front() {
                return Poll::Ready(Some(Ok(frame)));
            }
            if this.done {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
                Poll::Ready(None) => {
                    if let Err(e) = this.finish_encoder() {
                        return Poll::Ready(Some(Err(e)));
                    }
                }
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        if data.is_empty() {
                            continue;
                        }
                        let Some(enc) = this.encoder.as_mut() else {
                            continue;
                        };
                        match enc.push(&data) {
                            Ok(out) if out.is_empty() => {}
                            Ok(out) => return Poll::Ready(Some(Ok(Frame::data(out)))),
                            Err(e) => {
                                this.done = true;
                                this.encoder = None;
                                return Poll::Ready(Some(Err(e.into())));
                            }
                        }
                    }
                    Err(frame) => {
                        // Trailers end the body: the coded stream must be complete before them.
                        if let Ok(trailers) = frame.into_trailers() {
                            if let Err(e) = this.finish_encoder() {
                                return Poll::Ready(Some(Err(e)));
                            }
                            this.queued.push_back(Frame::trailers(trailers));
                        }
                    }
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.queued.is_empty() && self.init_error.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::task::Waker;

    fn accept(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn neg(values: &[&str]) -> Option<Encoding> {
        negotiate(&accept(values), &CompressOptions::default())
    }

    #[test]
    fn tokens_and_parse() {
        assert_eq!(Encoding::Gzip.token(), "gzip");
        assert_eq!(Encoding::Brotli.token(), "br");
        assert_eq!(Encoding::Zstd.token(), "zstd");
        assert_eq!(Encoding::parse(" GZip "), Some(Encoding::Gzip));
        assert_eq!(Encoding::parse("x-gzip"), Some(Encoding::Gzip));
        assert_eq!(Encoding::parse("BR"), Some(Encoding::Brotli));
        assert_eq!(Encoding::parse("zstd"), Some(Encoding::Zstd));
        assert_eq!(Encoding::parse("deflate"), None);
        assert_eq!(Encoding::parse("identity"), None);
    }

    #[test]
    fn negotiation() {
        // No header, empty header, only unknown or identity: nothing.
        assert_eq!(neg(&[]), None);
        assert_eq!(neg(&[""]), None);
        assert_eq!(neg(&["identity, deflate"]), None);
        // Ties broken by server order (zstd, br, gzip).
        assert_eq!(neg(&["gzip, br"]), Some(Encoding::Brotli));
        assert_eq!(neg(&["gzip, deflate, br, zstd"]), Some(Encoding::Zstd));
        // Client's highest q wins over server preference.
        assert_eq!(neg(&["zstd;q=0.5, gzip;q=0.9"]), Some(Encoding::Gzip));
        assert_eq!(neg(&["br;q=0.8", "gzip;q=0.81"]), Some(Encoding::Gzip));
        assert_eq!(neg(&["gzip ; Q=1.0, br;q=0.999"]), Some(Encoding::Gzip));
        // q=0 excludes, even when "*" would allow.
        assert_eq!(neg(&["zstd;q=0, br;q=0, *"]), Some(Encoding::Gzip));
        assert_eq!(neg(&["gzip;q=0"]), None);
        assert_eq!(neg(&["gzip;q=0.000"]), None);
        // "*" matches any coding, server order decides.
        assert_eq!(neg(&["*"]), Some(Encoding::Zstd));
        assert_eq!(neg(&["*;q=0.1, gzip;q=0.2"]), Some(Encoding::Gzip));
        assert_eq!(neg(&["*;q=0"]), None);
        // Malformed q-values drop the entry, not the header.
        assert_eq!(
            neg(&["zstd;q=2, br;q=abc, gzip;q=0.5"]),
            Some(Encoding::Gzip)
        );
        assert_eq!(neg(&["zstd;q=0.1234"]), None);
        // Repeated entries: the higher q counts.
        assert_eq!(
            neg(&["br;q=0.1, gzip;q=0.5, br;q=0.9"]),
            Some(Encoding::Brotli)
        );
        // Only offered encodings are picked.
        let opts = CompressOptions {
            encodings: vec![Encoding::Gzip],
            ..CompressOptions::default()
        };
        assert_eq!(negotiate(&accept(&["zstd, br"]), &opts), None);
        assert_eq!(
            negotiate(&accept(&["zstd, br, gzip;q=0.1"]), &opts),
            Some(Encoding::Gzip)
        );
        let opts = CompressOptions {
            encodings: vec![Encoding::Gzip, Encoding::Brotli],
            ..CompressOptions::default()
        };
        assert_eq!(
            negotiate(&accept(&["br, gzip"]), &opts),
            Some(Encoding::Gzip)
        );
    }

    #[test]
    fn qvalues() {
        assert_eq!(parse_qvalue("1"), Some(1000));
        assert_eq!(parse_qvalue("1.000"), Some(1000));
        assert_eq!(parse_qvalue("1.001"), None);
        assert_eq!(parse_qvalue("0.5"), Some(500));
        assert_eq!(parse_qvalue("0.05"), Some(50));
        assert_eq!(parse_qvalue("0."), Some(0));
        assert_eq!(parse_qvalue(".5"), None);
        assert_eq!(parse_qvalue("-0.5"), None);
    }

    fn resp(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn compressible_rules() {
        let o = CompressOptions::default();
        let ok = StatusCode::OK;
        let html = resp(&[("content-type", "text/html; charset=utf-8")]);
        assert!(compressible(ok, false, &html, &o));
        assert!(compressible(StatusCode::NOT_FOUND, false, &html, &o));
        assert!(!compressible(ok, true, &html, &o));
        for s in [100, 101, 204, 206, 304] {
            assert!(
                !compressible(StatusCode::from_u16(s).unwrap(), false, &html, &o),
                "{s}"
            );
        }
        assert!(compressible(ok, false, &HeaderMap::new(), &o));
        assert!(!compressible(
            ok,
            false,
            &resp(&[("content-encoding", "gzip")]),
            &o
        ));
        assert!(!compressible(
            ok,
            false,
            &resp(&[("content-encoding", "identity, br")]),
            &o
        ));
        assert!(compressible(
            ok,
            false,
            &resp(&[("content-encoding", "Identity")]),
            &o
        ));
        assert!(!compressible(
            ok,
            false,
            &resp(&[("content-range", "bytes 0-9/100")]),
            &o
        ));
        assert!(!compressible(
            ok,
            false,
            &resp(&[("cache-control", "public, No-Transform")]),
            &o
        ));
        assert!(compressible(
            ok,
            false,
            &resp(&[("cache-control", "no-cache")]),
            &o
        ));
        // Size: a known length below min_size is skipped; exactly min_size is compressed.
        assert!(!compressible(
            ok,
            false,
            &resp(&[("content-length", "1023")]),
            &o
        ));
        assert!(compressible(
            ok,
            false,
            &resp(&[("content-length", "1024")]),
            &o
        ));
        let zero = CompressOptions {
            min_size: 0,
            ..CompressOptions::default()
        };
        assert!(compressible(
            ok,
            false,
            &resp(&[("content-length", "0")]),
            &zero
        ));
        // Media types: parameters and case ignored, type/* prefixes.
        for ct in [
            "text/event-stream",
            "Text/Event-Stream; charset=utf-8",
            "image/png",
            "IMAGE/svg+xml",
            "video/mp4",
            "audio/ogg",
            "application/zip",
            "application/gzip",
            "application/octet-stream",
            "font/woff2",
        ] {
            assert!(
                !compressible(ok, false, &resp(&[("content-type", ct)]), &o),
                "{ct}"
            );
        }
        for ct in [
            "application/json",
            "text/plain",
            "application/javascript",
            "imagex/png",
        ] {
            assert!(
                compressible(ok, false, &resp(&[("content-type", ct)]), &o),
                "{ct}"
            );
        }
        let custom = CompressOptions {
            excluded_types: vec!["Application/JSON".into()],
            ..CompressOptions::default()
        };
        let json = resp(&[("content-type", "application/json; charset=utf-8")]);
        assert!(!compressible(ok, false, &json, &custom));
        assert!(compressible(
            ok,
            false,
            &resp(&[("content-type", "image/png")]),
            &custom
        ));
    }

    #[test]
    fn header_rewrite() {
        let mut h = resp(&[
            ("content-length", "5000"),
            ("accept-ranges", "bytes"),
            ("etag", "\"abc\""),
            ("vary", "Origin"),
            ("vary", "Cookie"),
        ]);
        apply_headers(&mut h, Encoding::Brotli);
        assert_eq!(h.get(CONTENT_ENCODING).unwrap(), "br");
        assert!(h.get(CONTENT_LENGTH).is_none());
        assert!(h.get(ACCEPT_RANGES).is_none());
        assert_eq!(h.get_all(VARY).iter().count(), 1);
        assert_eq!(h.get(VARY).unwrap(), "Origin, Cookie, Accept-Encoding");
        assert_eq!(h.get(ETAG).unwrap(), "W/\"abc\"");

        let mut h = resp(&[("vary", "accept-encoding"), ("etag", "W/\"x\"")]);
        apply_headers(&mut h, Encoding::Gzip);
        assert_eq!(h.get(VARY).unwrap(), "accept-encoding");
        assert_eq!(h.get(ETAG).unwrap(), "W/\"x\"");
        assert_eq!(h.get(CONTENT_ENCODING).unwrap(), "gzip");

        let mut h = resp(&[("vary", "*"), ("content-encoding", "identity")]);
        apply_headers(&mut h, Encoding::Zstd);
        assert_eq!(h.get(VARY).unwrap(), "*");
        assert_eq!(h.get_all(CONTENT_ENCODING).iter().count(), 1);
        assert_eq!(h.get(CONTENT_ENCODING).unwrap(), "zstd");

        let mut h = HeaderMap::new();
        apply_headers(&mut h, Encoding::Gzip);
        assert_eq!(h.get(VARY).unwrap(), "Accept-Encoding");
        assert!(h.get(ETAG).is_none());
    }

    /// A scripted body: frames in order, `None` entries answer Pending once (and wake).
    struct Script {
        steps: VecDeque<Option<Result<Frame<Bytes>, io::Error>>>,
    }

    impl Body for Script {
        type Data = Bytes;
        type Error = io::Error;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
            match self.steps.pop_front() {
                None => Poll::Ready(None),
                Some(None) => {
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                Some(Some(r)) => Poll::Ready(Some(r)),
            }
        }
    }

    fn data(s: &[u8]) -> Option<Result<Frame<Bytes>, io::Error>> {
        Some(Ok(Frame::data(Bytes::copy_from_slice(s))))
    }

    /// Polls to the end: (data frames, trailers, errors, pendings seen).
    type Drained = (Vec<Bytes>, Option<HeaderMap>, Vec<String>, usize);
    fn drain<B: Body<Data = Bytes, Error = BoxError> + Unpin>(mut body: B) -> Drained {
        let mut cx = Context::from_waker(Waker::noop());
        let (mut frames, mut trailers, mut errors, mut pendings) = (vec![], None, vec![], 0);
        for _ in 0..10_000 {
            match Pin::new(&mut body).poll_frame(&mut cx) {
                Poll::Pending => pendings += 1,
                Poll::Ready(None) => {
                    assert!(body.is_end_stream());
                    return (frames, trailers, errors, pendings);
                }
                Poll::Ready(Some(Ok(f))) => match f.into_data() {
                    Ok(d) => {
                        assert!(trailers.is_none(), "data after trailers");
                        frames.push(d)
                    }
                    Err(f) => trailers = Some(f.into_trailers().unwrap()),
                },
                Poll::Ready(Some(Err(e))) => errors.push(e.to_string()),
            }
        }
        panic!("body never ended");
    }

    fn decode(enc: Encoding, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        match enc {
            Encoding::Gzip => {
                flate2::read::GzDecoder::new(bytes)
                    .read_to_end(&mut out)
                    .unwrap();
            }
            Encoding::Brotli => {
                brotli::Decompressor::new(bytes, 4096)
                    .read_to_end(&mut out)
                    .unwrap();
            }
            Encoding::Zstd => out = zstd::stream::decode_all(bytes).unwrap(),
        }
        out
    }

    fn sample() -> Vec<Vec<u8>> {
        (0..20)
            .map(|i| {
                format!(
                    "frame {i}: {}\n",
                    "lorem ipsum dolor sit amet ".repeat(i * 7)
                )
                .into_bytes()
            })
            .collect()
    }

    #[test]
    fn round_trip_all_encodings() {
        for enc in [Encoding::Gzip, Encoding::Brotli, Encoding::Zstd] {
            let parts = sample();
            let mut steps: VecDeque<_> = VecDeque::new();
            for (i, p) in parts.iter().enumerate() {
                if i % 5 == 0 {
                    steps.push_back(None);
                }
                steps.push_back(data(p));
                steps.push_back(data(b""));
            }
            let body = CompressBody::new(Script { steps }, enc);
            let (frames, trailers, errors, pendings) = drain(body);
            assert!(errors.is_empty(), "{enc:?}: {errors:?}");
            assert!(trailers.is_none());
            assert_eq!(pendings, 4);
            let all: Vec<u8> = frames.iter().flat_map(|b| b.iter().copied()).collect();
            let expected: Vec<u8> = parts.concat();
            assert_eq!(decode(enc, &all), expected, "{enc:?}");
            assert!(
                all.len() < expected.len() / 3,
                "{enc:?}: {} bytes",
                all.len()
            );
        }
    }

    #[test]
    fn every_frame_is_flushed() {
        // After each input frame, the output so far must decode to exactly the input so far.
        for enc in [Encoding::Gzip, Encoding::Brotli, Encoding::Zstd] {
            let mut steps = VecDeque::new();
            steps.push_back(data(b"first chunk "));
            steps.push_back(None);
            steps.push_back(data(b"second chunk"));
            let mut body = CompressBody::new(Script { steps }, enc);
            let mut cx = Context::from_waker(Waker::noop());
            let Poll::Ready(Some(Ok(f))) = Pin::new(&mut body).poll_frame(&mut cx) else {
                panic!("{enc:?}: no first frame");
            };
            let first = f.into_data().unwrap();
            let partial = match enc {
                Encoding::Gzip => {
                    let mut d = flate2::write::GzDecoder::new(Vec::new());
                    d.write_all(&first).unwrap();
                    d.flush().unwrap();
                    d.get_ref().clone()
                }
                Encoding::Brotli => {
                    let mut d = brotli::DecompressorWriter::new(Vec::new(), 4096);
                    d.write_all(&first).unwrap();
                    d.flush().unwrap();
                    d.get_ref().clone()
                }
                Encoding::Zstd => {
                    let mut d = zstd::stream::write::Decoder::new(Vec::new()).unwrap();
                    d.write_all(&first).unwrap();
                    d.flush().unwrap();
                    d.get_ref().clone()
                }
            };
            assert_eq!(partial, b"first chunk ", "{enc:?}");
            assert!(Pin::new(&mut body).poll_frame(&mut cx).is_pending());
        }
    }

    #[test]
    fn trailers_follow_the_tail() {
        let mut t = HeaderMap::new();
        t.insert("grpc-status", HeaderValue::from_static("0"));
        let mut steps = VecDeque::new();
        steps.push_back(data(b"hello hello hello"));
        steps.push_back(Some(Ok(Frame::trailers(t))));
        let (frames, trailers, errors, _) =
            drain(CompressBody::new(Script { steps }, Encoding::Gzip));
        assert!(errors.is_empty());
        assert_eq!(trailers.unwrap().get("grpc-status").unwrap(), "0");
        let all: Vec<u8> = frames.iter().flat_map(|b| b.iter().copied()).collect();
        assert_eq!(decode(Encoding::Gzip, &all), b"hello hello hello");
    }

    #[test]
    fn empty_body_is_a_valid_stream() {
        for enc in [Encoding::Gzip, Encoding::Brotli, Encoding::Zstd] {
            let (frames, _, errors, _) = drain(CompressBody::new(
                Script {
                    steps: VecDeque::new(),
                },
                enc,
            ));
            assert!(errors.is_empty());
            let all: Vec<u8> = frames.iter().flat_map(|b| b.iter().copied()).collect();
            assert!(
                !all.is_empty(),
                "{enc:?}: an empty coded stream still has a header"
            );
            assert_eq!(decode(enc, &all), b"", "{enc:?}");
        }
    }

    #[test]
    fn inner_errors_pass_through() {
        let mut steps = VecDeque::new();
        steps.push_back(data(b"abc"));
        steps.push_back(Some(Err(io::Error::other("upstream reset"))));
        let (frames, _, errors, _) = drain(CompressBody::new(Script { steps }, Encoding::Zstd));
        assert_eq!(errors, vec!["upstream reset".to_owned()]);
        assert!(!frames.is_empty());
    }

    #[test]
    fn body_is_send() {
        fn assert_send<T: Send>(_: &T) {}
        let b = CompressBody::new(http_body_util::Empty::<Bytes>::new(), Encoding::Brotli);
        assert_send(&b);
        let (frames, _, errors, _) = drain(CompressBody::new(
            http_body_util::Full::new(Bytes::from_static(b"full body")),
            Encoding::Brotli,
        ));
        assert!(errors.is_empty());
        let all: Vec<u8> = frames.iter().flat_map(|b| b.iter().copied()).collect();
        assert_eq!(decode(Encoding::Brotli, &all), b"full body");
    }
}
