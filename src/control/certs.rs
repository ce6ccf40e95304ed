//! The certificates TLS entrypoints serve, kept in step with the scripts and the files.
//!
//! Owns `CertManager`: the config's certificate files, the default certificate, the live
//! `Certificates` the proxy workers share, and the files' stamps (modification time and size)
//! so a changed file triggers a reload. Invariants: a build goes live only with every
//! certificate it names loaded (an unreadable, expired or mismatched pair is a build error
//! naming the file and the script line that declared it, and the last good certificates keep
//! serving); the store is swapped whole, after the check.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::routing::Location;
use crate::script::ScriptError;
use crate::tls::store::{ChosenOptions, OptionsIndex};
use crate::tls::{Cert, CertFiles, CertSource, CertStore, Certificates, TlsOptions};

/// A file's modification time and length, `None` when it cannot be read.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// The certificates and where they come from.
pub struct CertManager {
    live: Arc<Certificates>,
    /// From `--tls.certificate` / `[tls]`.
    config: Vec<CertFiles>,
    default: Cert,
    /// Where relative paths in scripts start.
    base: PathBuf,
    /// The files of the live store and their stamps when read.
    stamps: Mutex<Vec<(PathBuf, Stamp)>>,
    sources: Mutex<Vec<Arc<dyn CertSource>>>,
}

impl std::fmt::Debug for CertManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertManager")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// A loaded store ready to swap in, and the files it was read from.
pub struct Prepared {
    store: CertStore,
    files: Vec<PathBuf>,
}

impl CertManager {
    /// Reads the config's certificates and the default one (self-signed when not given); any
    /// that cannot serve is an error here, at start.
    pub fn new(
        config: Vec<CertFiles>,
        default: Option<&CertFiles>,
        base: PathBuf,
    ) -> Result<CertManager, String> {
        let default = match default {
            Some(f) => crate::tls::certs::load(f).map_err(|e| format!("default {e}"))?,
            None => crate::tls::certs::self_signed()?,
        };
        let mut certs = Vec::new();
        for f in &config {
            certs.push(crate::tls::certs::load(f).map_err(|e| e.to_string())?);
        }
        let files = config
            .iter()
            .flat_map(|f| [f.cert.clone(), f.key.clone()])
            .collect::<Vec<_>>();
        let stamps = files.iter().map(|p| (p.clone(), stamp(p))).collect();
        Ok(CertManager {
            live: Certificates::new(CertStore::new(certs, default.clone())),
            config,
            default,
            base,
            stamps: Mutex::new(stamps),
            sources: Mutex::new(Vec::new()),
        })
    }

    /// The live certificates (shared with every TLS entrypoint).
    pub fn certificates(&self) -> Arc<Certificates> {
        self.live.clone()
    }

    /// Adds a source of certificates (ACME) read on every store rebuild.
    pub fn add_source(&self, source: Arc<dyn CertSource>) {
        self.sources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(source);
    }

    /// Loads the config's certificates and those a build declared; every failure is an error
    /// at the declaring script line (the config's at `config`).
    /// `generated`: the name whose certificate from a source (ACME) becomes the default, once a
    /// source holds one, unless `default` names files.
    pub fn prepare(
        &self,
        declared: &[(CertFiles, Location)],
        default: Option<&(CertFiles, Location)>,
        generated: Option<&str>,
    ) -> Result<Prepared, Vec<ScriptError>> {
        let mut certs = Vec::new();
        let mut errors = Vec::new();
        let mut files = Vec::new();
        // A script's default certificate replaces the router's (the config's or self-signed).
        let mut default_cert = self.default.clone();
        if let Some((f, at)) = default {
            let f = CertFiles {
                cert: self.base.join(&f.cert),
                key: self.base.join(&f.key),
            };
            files.extend([f.cert.clone(), f.key.clone()]);
            match crate::tls::certs::load(&f) {
                Ok(c) => default_cert = c,
                Err(e) => errors.push(ScriptError::at(at, format!("default certificate: {e}"))),
            }
        }
        let config = self.config.iter().map(|f| (f.clone(), None));
        let scripts = declared.iter().map(|(f, at)| {
            let f = CertFiles {
                cert: self.base.join(&f.cert),
                key: self.base.join(&f.key),
            };
            (f, Some(at))
        });
        for (f, at) in config.chain(scripts) {
            files.extend([f.cert.clone(), f.key.clone()]);
            match crate::tls::certs::load(&f) {
                Ok(c) => certs.push(c),
                Err(e) => errors.push(match at {
                    Some(at) => ScriptError::at(at, e.to_string()),
                    None => ScriptError {
                        file: "config".to_string(),
                        line: 0,
                        column: 0,
                        message: e.to_string(),
                        source_line: None,
                    },
                }),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        for s in self
            .sources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let from_source = s.certificates();
            if let (None, Some(main)) = (default, generated) {
                if let Some(c) = from_source
                    .iter()
                    .find(|c| c.names.iter().any(|n| n == main))
                {
                    default_cert = c.clone();
                }
            }
            certs.extend(from_source);
        }
        files.sort();
        files.dedup();
        Ok(Prepared {
            store: CertStore::new(certs, default_cert),
            files,
        })
    }

    /// The handshake settings of a build's named TLS options (`declared`) and the names each
    /// serves (`hosts`, from `script::build::options_by_host`); an unreadable client CA is an
    /// error at the declaring line.
    pub fn prepare_options(
        &self,
        declared: &[(String, TlsOptions, Location)],
        hosts: &[(String, String)],
    ) -> Result<OptionsIndex, Vec<ScriptError>> {
        let mut configs = std::collections::HashMap::new();
        let mut errors = Vec::new();
        for (name, opts, at) in declared {
            let mut o = opts.clone();
            o.client_ca = o.client_ca.map(|ca| self.base.join(ca));
            match o.server_config(self.live.clone()) {
                Ok(config) => {
                    let chosen = ChosenOptions {
                        name: name.as_str().into(),
                        config,
                    };
                    configs.insert(name.as_str(), chosen);
                }
                Err(e) => errors.push(ScriptError::at(at, format!("tls_options({name:?}): {e}"))),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut index = OptionsIndex::new(configs.get("default").cloned());
        for (host, name) in hosts {
            if let Some(c) = configs.get(name.as_str()) {
                index.insert(host, c.clone());
            }
        }
        Ok(index)
    }

    /// Makes a prepared store live.
    pub fn apply(&self, prepared: Prepared) {
        let stamps = prepared
            .files
            .iter()
            .map(|p| (p.clone(), stamp(p)))
            .collect();
        *self.stamps.lock().unwrap_or_else(|e| e.into_inner()) = stamps;
        self.live.swap(prepared.store);
    }

    /// Whether a file of the live store changed since it was read.
    pub fn files_changed(&self) -> bool {
        let stamps = self.stamps.lock().unwrap_or_else(|e| e.into_inner());
        stamps.iter().any(|(p, s)| stamp(p) != *s)
    }
}
