//! What a `compress` middleware asks for: the content codings the router may produce, in its
//! order of preference, the minimum size and the media types never encoded. Data only: the
//! negotiation and the streaming encoders live in `proxy::compress`.

/// A content coding this proxy can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Gzip,
    Brotli,
    Zstd,
}

impl Encoding {
    /// The token as it appears in `Content-Encoding`.
    pub fn token(self) -> &'static str {
        match self {
            Encoding::Gzip => "gzip",
            Encoding::Brotli => "br",
            Encoding::Zstd => "zstd",
        }
    }

    /// Case-insensitive; `x-gzip` is accepted as gzip (RFC 9110 §8.4.1.3 asks recipients to).
    pub fn parse(s: &str) -> Option<Encoding> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("gzip") || s.eq_ignore_ascii_case("x-gzip") {
            Some(Encoding::Gzip)
        } else if s.eq_ignore_ascii_case("br") {
            Some(Encoding::Brotli)
        } else if s.eq_ignore_ascii_case("zstd") {
            Some(Encoding::Zstd)
        } else {
            None
        }
    }
}

/// Media types excluded by default: event streams (compressing them delays events behind the
/// encoder's window in some clients and proxies) and formats that are already compressed, where
/// encoding again only costs CPU. `type/*` entries match every subtype; note that `image/*` also
/// excludes `image/svg+xml`, which would compress well: list types explicitly to change that.
pub const DEFAULT_EXCLUDED_TYPES: &[&str] = &[
    "text/event-stream",
    "image/*",
    "video/*",
    "audio/*",
    "font/woff",
    "font/woff2",
    "application/zip",
    "application/gzip",
    "application/x-gzip",
    "application/zstd",
    "application/x-bzip2",
    "application/x-xz",
    "application/x-7z-compressed",
    "application/x-rar-compressed",
    "application/vnd.rar",
    "application/octet-stream",
];

#[derive(Debug, Clone)]
pub struct CompressOptions {
    /// Server preference order, used to break ties between equal client q-values.
    pub encodings: Vec<Encoding>,
    /// Bodies with a known Content-Length below this are sent as they are.
    pub min_size: u64,
    /// Media types (without parameters, case-insensitive; `type/*` matches a whole type) never
    /// compressed.
    pub excluded_types: Vec<String>,
}

impl Default for CompressOptions {
    /// Traefik's defaults: zstd, then brotli, then gzip; 1024 bytes; `DEFAULT_EXCLUDED_TYPES`.
    fn default() -> Self {
        CompressOptions {
            encodings: vec![Encoding::Zstd, Encoding::Brotli, Encoding::Gzip],
            min_size: 1024,
            excluded_types: DEFAULT_EXCLUDED_TYPES
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
        }
    }
}
