//! File change notifications for the config file and the manifest paths.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;

use notify::event::ModifyKind;
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;

/// Watches a set of paths and signals (coalesced) when anything under them changes.
///
/// Each watched path's parent directory is watched too, so a file replaced by rename (as editors
/// and `kubectl`-style tools do) or a directory that vanishes and comes back is still seen.
pub struct FileWatcher {
    watcher: RecommendedWatcher,
    watched: BTreeSet<PathBuf>,
    /// The paths that matter; events elsewhere in a watched parent directory are ignored.
    targets: Arc<ArcSwap<Vec<PathBuf>>>,
}

impl std::fmt::Debug for FileWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileWatcher").field("watched", &self.watched).finish_non_exhaustive()
    }
}

impl FileWatcher {
    /// Creates a watcher whose change signals go to `changed` (capacity 1: signals coalesce).
    pub fn new(changed: mpsc::Sender<()>) -> notify::Result<Self> {
        let targets: Arc<ArcSwap<Vec<PathBuf>>> = Arc::default();
        let seen = targets.clone();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let relevant = match &event {
                // Reading the files (as a reload does) yields access and atime events:
                // neither changes content.
                Ok(event) => {
                    !matches!(
                        event.kind,
                        EventKind::Access(_) | EventKind::Modify(ModifyKind::Metadata(_))
                    ) && event.paths.iter().any(|path| concerns(&seen.load(), path))
                }
                // The kernel queue overflowed or a watch broke: reload to be safe.
                Err(_) => true,
            };
            if relevant {
                tracing::debug!(?event, "watched file changed");
                // Full means a reload is already pending: nothing is lost.
                let _ = changed.try_send(());
            }
        })?;
        Ok(Self { watcher, watched: BTreeSet::new(), targets })
    }

    /// Replaces the watched set with `paths` (and their parents). Paths that do not exist are
    /// skipped; their nearest existing ancestor is watched instead.
    pub fn rewatch(&mut self, paths: &[PathBuf]) {
        self.targets.store(Arc::new(paths.to_vec()));
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

/// What a set of paths looked like: every file and directory below them with its size and
/// modification time. Comparing two fingerprints catches a change made while the kernel watches
/// were being re-armed, which no event reports.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Fingerprint {
    targets: Vec<PathBuf>,
    entries: BTreeMap<PathBuf, (u64, Option<SystemTime>)>,
}

/// Bounds the walk: a manifest tree larger than this is fingerprinted in part.
const MAX_FINGERPRINT_ENTRIES: usize = 20_000;

impl Fingerprint {
    /// Fingerprints `targets` (directories recursively, symlinks followed).
    pub fn of(targets: &[PathBuf]) -> Self {
        let mut entries = BTreeMap::new();
        let mut stack: Vec<PathBuf> = targets.to_vec();
        while let Some(path) = stack.pop() {
            if entries.len() >= MAX_FINGERPRINT_ENTRIES {
                break;
            }
            let Ok(meta) = std::fs::metadata(&path) else { continue };
            if meta.is_dir()
                && let Ok(children) = std::fs::read_dir(&path)
            {
                stack.extend(children.flatten().map(|child| child.path()));
            }
            entries.insert(path, (meta.len(), meta.modified().ok()));
        }
        Self { targets: targets.to_vec(), entries }
    }
}

/// Whether a change at `path` can change what a load of `targets` reads: a target itself, a
/// manifest below a target directory, or an ancestor of a target (renamed or removed).
fn concerns(targets: &[PathBuf], path: &Path) -> bool {
    targets.iter().any(|target| {
        path == target
            || target.starts_with(path)
            || (path.starts_with(target)
                && (path.extension().is_some_and(|e| e == "yaml" || e == "yml") || path.is_dir()))
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_see_changes_below_directories() {
        let dir = tempfile::tempdir().unwrap();
        let manifests = dir.path().join("m");
        std::fs::create_dir_all(manifests.join("sub")).unwrap();
        std::fs::write(manifests.join("sub/a.yaml"), "a").unwrap();
        let targets = vec![manifests.clone()];
        let first = Fingerprint::of(&targets);
        assert_eq!(first, Fingerprint::of(&targets));
        std::fs::write(manifests.join("sub/a.yaml"), "ab").unwrap();
        let second = Fingerprint::of(&targets);
        assert_ne!(first, second);
        std::fs::remove_file(manifests.join("sub/a.yaml")).unwrap();
        assert_ne!(second, Fingerprint::of(&targets));
        assert_ne!(Fingerprint::of(&targets), Fingerprint::of(&[]));
    }

    #[test]
    fn only_changes_that_a_load_reads_matter() {
        let targets = vec![PathBuf::from("/etc/gh/gatehouse.toml"), PathBuf::from("/etc/gh/m")];
        assert!(concerns(&targets, Path::new("/etc/gh/gatehouse.toml")));
        assert!(concerns(&targets, Path::new("/etc/gh/m/a/b.yaml")));
        assert!(concerns(&targets, Path::new("/etc/gh/m/c.yml")));
        assert!(concerns(&targets, Path::new("/etc/gh")));
        assert!(concerns(&targets, Path::new("/etc/gh/m")));
        assert!(!concerns(&targets, Path::new("/etc/gh/gatehouse.toml.swp")));
        assert!(!concerns(&targets, Path::new("/etc/gh/m/notes.txt")));
        assert!(!concerns(&targets, Path::new("/etc/gh/other.toml")));
    }
}
