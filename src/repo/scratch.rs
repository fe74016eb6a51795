//! Scratch directories for packs being received, merged or pruned, and the sweep that
//! removes those a killed process left behind.
//!
//! Invariant: a scratch directory in use holds a lock (an exclusive `flock` on its
//! `.lock` file) for as long as its owner lives; the operating system releases it when
//! the process ends, however it ends. A directory is made under a staging name, locked
//! and renamed while its maker holds a shared lock on the parent's `.stowage-scratch.lock`,
//! and [`sweep`] holds that one exclusively: a sweep never sees a directory half made
//! by a living process. So a directory whose lock can be taken, or that has no lock
//! file, belongs to no one, and [`sweep`] may remove it, even while other servers share
//! the temporary directory.

use std::fs::File;
use std::path::{Path, PathBuf};

/// What every scratch directory's name starts with.
const PREFIX: &str = "stowage-scratch-";
/// The name a scratch directory has until its lock is held.
const STAGING: &str = ".stowage-staging-";
const LOCK: &str = ".lock";

/// Held shared while a directory is made, and exclusively while sweeping.
const MAKING: &str = ".stowage-scratch.lock";

/// The parent's lock on making and sweeping.
fn making_lock(parent: &Path) -> std::io::Result<File> {
    File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(parent.join(MAKING))
}

/// A scratch directory, removed when dropped.
#[derive(Debug)]
pub struct Scratch {
    path: PathBuf,
    /// Held for the directory's life.
    _lock: File,
}

impl Scratch {
    /// A new scratch directory in `parent`, for `purpose` (part of its name).
    pub fn new(parent: &Path, purpose: &str) -> std::io::Result<Self> {
        let making = making_lock(parent)?;
        making.lock_shared()?;
        let staging = tempfile::Builder::new()
            .prefix(STAGING)
            .tempdir_in(parent)?;
        let lock = File::create(staging.path().join(LOCK))?;
        lock.lock()?;
        let suffix = staging
            .path()
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix(STAGING))
            .unwrap_or("x")
            .to_owned();
        let path = parent.join(format!("{PREFIX}{purpose}-{suffix}"));
        std::fs::rename(staging.path(), &path)?;
        // Renamed away: the staging guard has nothing left to remove.
        let _ = staging.keep();
        Ok(Scratch { path, _lock: lock })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Removes the scratch directories in `parent` that no living process holds; returns
/// how many.
pub fn sweep(parent: &Path) -> std::io::Result<usize> {
    let making = making_lock(parent)?;
    making.lock()?;
    let mut removed = 0;
    for entry in std::fs::read_dir(parent)? {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let dir: PathBuf = entry.path();
        if name.starts_with(STAGING) {
            // Left by a process killed while making it (no living maker holds the
            // making lock now).
            if std::fs::remove_dir_all(&dir).is_ok() {
                removed += 1;
            }
            continue;
        }
        if !name.starts_with(PREFIX) {
            continue;
        }
        let lock = match File::open(dir.join(LOCK)) {
            Ok(lock) => lock,
            // Made, but killed before its lock: nobody can be using it.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if std::fs::remove_dir_all(&dir).is_ok() {
                    removed += 1;
                }
                continue;
            }
            Err(_) => continue,
        };
        if lock.try_lock().is_ok() && std::fs::remove_dir_all(&dir).is_ok() {
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_abandoned_directories_are_swept() {
        let parent = tempfile::tempdir().expect("parent");
        let live = Scratch::new(parent.path(), "push").expect("scratch");
        // One a killed process left: its lock file is there, nobody holds it.
        let dead = parent.path().join(format!("{PREFIX}push-dead"));
        std::fs::create_dir(&dead).expect("dir");
        File::create(dead.join(LOCK)).expect("lock");
        std::fs::write(dead.join("incoming.pack"), b"half a pack").expect("write");
        // One a process was killed while making: staging name, lock not held.
        let half_made = parent.path().join(format!("{STAGING}dead"));
        std::fs::create_dir(&half_made).expect("dir");
        File::create(half_made.join(LOCK)).expect("lock");
        let unrelated = parent.path().join("something-else");
        std::fs::create_dir(&unrelated).expect("dir");
        assert_eq!(sweep(parent.path()).expect("sweep"), 2);
        assert!(!dead.exists());
        assert!(!half_made.exists());
        assert!(live.path().exists(), "a directory in use stays");
        assert!(unrelated.exists());
        let path = live.path().to_owned();
        drop(live);
        assert!(!path.exists(), "removed when dropped");
    }

    #[test]
    fn a_sweep_never_takes_a_directory_being_made() {
        let parent = tempfile::tempdir().expect("parent");
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            let sweeper = scope.spawn(|| {
                let mut sweeps = 0;
                while !done.load(std::sync::atomic::Ordering::SeqCst) {
                    sweep(parent.path()).expect("sweep");
                    sweeps += 1;
                }
                sweeps
            });
            let made = std::panic::catch_unwind(|| {
                for _ in 0..500 {
                    let scratch = Scratch::new(parent.path(), "push").expect("scratch");
                    std::fs::write(scratch.path().join("incoming.pack"), b"pack")
                        .expect("still there");
                }
            });
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            assert!(sweeper.join().expect("sweeper") > 0);
            made.expect("every directory made stays its maker's");
        });
    }
}
