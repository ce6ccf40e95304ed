//! Recordings: the format (`format.rs`: `RecordedRequest`, JSON lines, HAR import, typed-in
//! requests, and `DryRequest`, the request a dry run decides) and live recording (`recorder.rs`:
//! the `Recorder` the proxy workers feed, its scope, redaction, rotation and writer thread).
//!
//! A leaf both sides use: the proxy writes recordings, `replay` reads them, and neither side
//! is imported here (ARCHITECTURE.md's dependency rules).

pub mod format;
pub mod recorder;
