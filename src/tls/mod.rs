//! TLS termination: certificates, their choice by SNI and the per-entrypoint rustls settings.
//!
//! Owns the crypto provider (`ring`, installed once as the process default by `install`),
//! certificate files and the self-signed default (`certs`), the live certificate store swapped
//! whole on reload (`store`), entrypoint TLS options and the rustls `ServerConfig` made from
//! them (`options`), and `CertSource`, the seam through which something other than files (ACME)
//! adds certificates. A leaf: it names no other switchyard module, so the proxy, the control
//! loop and config use it without cycles.
//!
//! Invariants: private keys are read only here, never by scripts; a certificate that cannot
//! serve (unreadable, expired, key mismatch) never reaches the store; a store is swapped whole,
//! so a handshake sees one set of certificates.

pub mod certs;
pub mod options;
pub mod store;

use std::sync::Arc;

use rustls::crypto::CryptoProvider;

pub use certs::{Cert, CertError, CertFiles};
pub use options::{ClientAuth, TlsOptions};
pub use store::{CertStore, Certificates, SniResolver};

/// The one crypto provider: `ring` (already in the dependency tree, builds without a C
/// toolchain beyond cc, constant-time P-256/X25519/Ed25519 and AES-GCM/ChaCha20).
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: std::sync::OnceLock<Arc<CryptoProvider>> = std::sync::OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// Installs `provider()` as the process default (for rustls users that take the default, such
/// as the Docker client). Idempotent.
pub fn install() {
    let _ = CryptoProvider::install_default((*provider()).clone());
}

/// Where certificates come from besides the files scripts and the config name: the ACME
/// resolvers implement it. `certificates` is called on every store rebuild and must not block.
pub trait CertSource: Send + Sync {
    /// What the source serves now.
    fn certificates(&self) -> Vec<Cert>;
}
