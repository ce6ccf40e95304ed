//! The file provider: a JSON catalog file (`--catalog FILE`), re-read whenever it changes.
//!
//! Invariants: a snapshot is sent only for a file that parsed completely; a missing or broken file
//! is logged with its path and the last good catalog stays in use. Watches the file's folder, so
//! editors' write-then-rename saves are seen.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use notify::{EventKind, RecursiveMode, Watcher};
use tracing::{error, info, warn};

use crate::catalog::Catalog;
use crate::catalog::{ProviderReport, ProviderSender};

/// Watches `path` and sends `ProviderReport::Snapshot` with the new contents after each change.
/// The returned watcher must be kept alive.
pub fn watch(path: &Path, tx: ProviderSender) -> notify::Result<notify::RecommendedWatcher> {
    let file: PathBuf = path.to_path_buf();
    let name = file.file_name().map(|n| n.to_os_string());
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        match res {
            Ok(ev) if !matches!(ev.kind, EventKind::Access(_)) => {
                if ev
                    .paths
                    .iter()
                    .any(|p| p.file_name().map(|n| n.to_os_string()) == name)
                {
                    match Catalog::load(&file) {
                        Ok(c) => {
                            info!(file = %file.display(), entries = c.entries.len(), "catalog file changed");
                            let _ = tx.try_send(ProviderReport::Snapshot {
                                provider: "file",
                                catalog: Arc::new(c),
                            });
                        }
                        Err(e) => {
                            error!("{e}; keeping the last good catalog");
                            let _ = tx.try_send(ProviderReport::SyncFailed {
                                provider: "file",
                                error: e.to_string(),
                            });
                        }
                    }
                }
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "catalog watcher error"),
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}
