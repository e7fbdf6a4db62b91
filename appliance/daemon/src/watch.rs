//! File change notifications for the config file and the manifest paths.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;

/// Watches a set of paths and signals (coalesced) when anything under them changes.
///
/// Each watched path's parent directory is watched too, so a file replaced by rename (as editors
/// and `kubectl`-style tools do) or a directory that vanishes and comes back is still seen.
pub struct FileWatcher {
    watcher: RecommendedWatcher,
    watched: BTreeSet<PathBuf>,
}

impl std::fmt::Debug for FileWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileWatcher").field("watched", &self.watched).finish_non_exhaustive()
    }
}

impl FileWatcher {
    /// Creates a watcher whose change signals go to `changed` (capacity 1: signals coalesce).
    pub fn new(changed: mpsc::Sender<()>) -> notify::Result<Self> {
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let relevant = match &event {
                Ok(event) => !matches!(event.kind, EventKind::Access(_)),
                Err(_) => true,
            };
            if relevant {
                // Full means a reload is already pending: nothing is lost.
                let _ = changed.try_send(());
            }
        })?;
        Ok(Self { watcher, watched: BTreeSet::new() })
    }

    /// Replaces the watched set with `paths` (and their parents). Paths that do not exist are
    /// skipped; their nearest existing ancestor is watched instead.
    pub fn rewatch(&mut self, paths: &[PathBuf]) {
        let mut wanted = BTreeSet::new();
        for path in paths {
            if path.exists() {
                wanted.insert(path.clone());
            }
            if let Some(ancestor) = existing_ancestor(path) {
                wanted.insert(ancestor);
            }
        }
        // Watch everything anew: a directory that vanished and came back since the last call
        // has lost its kernel watch even though its path is unchanged.
        for path in std::mem::take(&mut self.watched) {
            let _ = self.watcher.unwatch(&path);
        }
        for path in wanted {
            let mode = if path.is_dir() && paths.contains(&path) {
                RecursiveMode::Recursive
            } else {
                RecursiveMode::NonRecursive
            };
            match self.watcher.watch(&path, mode) {
                Ok(()) => {
                    self.watched.insert(path);
                }
                Err(error) => tracing::warn!(path = %path.display(), %error, "cannot watch path"),
            }
        }
    }
}

fn existing_ancestor(path: &Path) -> Option<PathBuf> {
    let mut current = path.parent();
    while let Some(dir) = current {
        let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
        if dir.is_dir() {
            return Some(dir.to_path_buf());
        }
        current = dir.parent();
    }
    None
}
