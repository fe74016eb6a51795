//! The filesystem backend of the stowage [`ObjectStore`].
//!
//! Objects are files under a root directory, at the path their [`Key`] names. The
//! backend keeps the contract's guarantees between any number of processes on one
//! machine (or on a filesystem with working `flock`, `link` and `rename`):
//!
//! - every write goes to a temporary file in the target directory first, and becomes
//!   visible only by an atomic `rename` (overwrite) or `link`/`renameat2(NOREPLACE)`
//!   (create), so a reader sees a whole old or a whole new object, never a part;
//! - [`PutMode::Create`] is atomic by the link: it fails if anything is at the path;
//! - [`PutMode::Update`], overwrites and deletes of a key hold an exclusive `flock` on
//!   the key's lock file (`.stowage-lock.<name>` beside it) while they compare the
//!   current tag and rename. The lock is released by the kernel if the process dies,
//!   so a crash never wedges a key.
//! - The tag derives from content ([`ETag::of_content`]). It is computed while writing
//!   and kept in the file's `user.stowage.etag` extended attribute, set on the
//!   temporary file before it is renamed into place (so tag and content change
//!   together); where extended attributes are unsupported it is computed from the
//!   content on read.
//!
//! Names starting with `.stowage-` are the backend's own (temporary and lock files):
//! keys with such a segment are refused and listings skip them.
//!
//! Durability (fsync policy): by default, a write fsyncs the temporary file before it
//! is renamed or linked into place, and fsyncs the directory after, so an acknowledged
//! write survives a power loss. Deletes fsync the directory. [`FsStore::without_fsync`]
//! turns both off for throwaway stores.
//!
//! Limitation: a key cannot be both an object and a "directory" of other keys (`a` and
//! `a/b`), which S3 allows; stowage's repository layout never needs it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};
use stowage_store::{
    ByteRange, ByteStream, ContentHasher, ETag, Error, GetResult, Key, ObjectMeta, ObjectStore,
    PutMode, Result,
};
use tempfile::NamedTempFile;
use tokio::io::AsyncWriteExt;

/// Prefix of every file name the backend uses for itself.
const RESERVED: &str = ".stowage-";
const TMP_PREFIX: &str = ".stowage-tmp.";
const LOCK_PREFIX: &str = ".stowage-lock.";
const ETAG_XATTR: &str = "user.stowage.etag";

/// An object store in a directory. Clones share configuration.
#[derive(Debug, Clone)]
pub struct FsStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    /// Whether writes fsync file and directory before they return.
    fsync: bool,
}

impl FsStore {
    /// A store rooted at `root`, which is created if missing.
    pub fn new(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        fs::create_dir_all(&root).map_err(|e| Error::from_io(root.display().to_string(), e))?;
        Ok(FsStore {
            inner: Arc::new(Inner { root, fsync: true }),
        })
    }

    /// The same store without fsync: faster, but a crash may lose acknowledged writes.
    pub fn without_fsync(self) -> Self {
        FsStore {
            inner: Arc::new(Inner {
                root: self.inner.root.clone(),
                fsync: false,
            }),
        }
    }

    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// Runs blocking filesystem work off the async runtime.
    async fn blocking<T: Send + 'static>(
        &self,
        key: &Key,
        work: impl FnOnce(&Inner) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = self.inner.clone();
        let name = key.to_string();
        tokio::task::spawn_blocking(move || work(&inner))
            .await
            .map_err(|e| Error::Other {
                key: name,
                source: Box::new(e),
            })?
    }
}

/// Where one key lives, and the names of its lock file.
#[derive(Debug, Clone)]
struct Location {
    key: Key,
    path: PathBuf,
}

impl Location {
    fn dir(&self) -> &Path {
        self.path
            .parent()
            .expect("an object path has a parent: the root")
    }

    fn file_name(&self) -> &str {
        self.key.segments().last().expect("a key has a segment")
    }

    fn lock_path(&self) -> PathBuf {
        self.dir()
            .join(format!("{LOCK_PREFIX}{}", self.file_name()))
    }

    fn io(&self, err: io::Error) -> Error {
        Error::from_io(self.key.as_str(), err)
    }
}

impl Inner {
    fn locate(&self, key: &Key) -> Result<Location> {
        let mut path = self.root.clone();
        for segment in key.segments() {
            if segment.starts_with(RESERVED) {
                return Err(Error::InvalidKey {
                    key: key.to_string(),
                    reason: "segments starting with `.stowage-` are reserved",
                });
            }
            path.push(segment);
        }
        Ok(Location {
            key: key.clone(),
            path,
        })
    }

    /// A temporary file in the object's directory, created with the directory.
    fn temp_file(&self, at: &Location) -> Result<NamedTempFile> {
        let builder = || {
            tempfile::Builder::new()
                .prefix(TMP_PREFIX)
                .tempfile_in(at.dir())
        };
        match builder() {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(at.dir()).map_err(|e| at.io(e))?;
                builder().map_err(|e| at.io(e))
            }
            other => other.map_err(|e| at.io(e)),
        }
    }

    /// Tags a fully written temporary file and makes it durable.
    fn seal(&self, at: &Location, tmp: &NamedTempFile, etag: &ETag) -> Result<()> {
        // Extended attributes are an optimisation: without them the tag is recomputed.
        let _ = xattr::FileExt::set_xattr(tmp.as_file(), ETAG_XATTR, etag.as_str().as_bytes());
        if self.fsync {
            tmp.as_file().sync_all().map_err(|e| at.io(e))?;
        }
        Ok(())
    }

    fn sync_dir(&self, at: &Location) -> Result<()> {
        if self.fsync {
            File::open(at.dir())
                .and_then(|d| d.sync_all())
                .map_err(|e| at.io(e))?;
        }
        Ok(())
    }

    /// Holds the key's lock until the returned file is dropped.
    fn lock(&self, at: &Location) -> Result<File> {
        let open = || {
            OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(at.lock_path())
        };
        let file = match open() {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(at.dir()).map_err(|e| at.io(e))?;
                open()
            }
            other => other,
        }
        .map_err(|e| at.io(e))?;
        file.lock().map_err(|e| at.io(e))?;
        Ok(file)
    }

    /// Moves a sealed temporary file to the key as `mode` allows.
    fn install(&self, at: &Location, tmp: NamedTempFile, mode: PutMode) -> Result<()> {
        match mode {
            PutMode::Create => match tmp.persist_noclobber(&at.path) {
                Ok(_) => {}
                Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => {
                    return Err(Error::AlreadyExists {
                        key: at.key.to_string(),
                    });
                }
                Err(e) => return Err(at.io(e.error)),
            },
            PutMode::Overwrite => {
                let _lock = self.lock(at)?;
                tmp.persist(&at.path).map_err(|e| at.io(e.error))?;
            }
            PutMode::Update(expected) => {
                let _lock = self.lock(at)?;
                let current = match File::open(&at.path) {
                    Ok(mut file) => Some(etag_of(&mut file).map_err(|e| at.io(e))?),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                    Err(e) => return Err(at.io(e)),
                };
                if current.as_ref() != Some(&expected) {
                    return Err(Error::Precondition {
                        key: at.key.to_string(),
                    });
                }
                tmp.persist(&at.path).map_err(|e| at.io(e.error))?;
            }
        }
        self.sync_dir(at)
    }
}

/// The tag of an open object file: from its extended attribute, else from its content.
/// Leaves the file position at the start.
fn etag_of(file: &mut File) -> io::Result<ETag> {
    if let Ok(Some(tag)) = xattr::FileExt::get_xattr(file, ETAG_XATTR)
        && let Ok(tag) = String::from_utf8(tag)
    {
        return Ok(ETag::new(tag));
    }
    let mut hasher = ContentHasher::default();
    let mut buf = vec![0; 1 << 16];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    file.seek(SeekFrom::Start(0))?;
    Ok(hasher.finish())
}

fn meta_of(key: &Key, file: &mut File) -> io::Result<ObjectMeta> {
    let metadata = file.metadata()?;
    Ok(ObjectMeta {
        key: key.clone(),
        size: metadata.len(),
        etag: etag_of(file)?,
        modified: metadata.modified().ok(),
    })
}

#[async_trait]
impl ObjectStore for FsStore {
    async fn get(&self, key: &Key) -> Result<GetResult> {
        let at = self.inner.locate(key)?;
        self.blocking(key, move |_| {
            let mut file = File::open(&at.path).map_err(|e| at.io(e))?;
            let meta = meta_of(&at.key, &mut file).map_err(|e| at.io(e))?;
            let mut bytes = Vec::with_capacity(meta.size as usize);
            file.read_to_end(&mut bytes).map_err(|e| at.io(e))?;
            Ok(GetResult {
                meta: ObjectMeta {
                    size: bytes.len() as u64,
                    ..meta
                },
                bytes: bytes.into(),
            })
        })
        .await
    }

    async fn get_range(&self, key: &Key, range: ByteRange) -> Result<Bytes> {
        let at = self.inner.locate(key)?;
        self.blocking(key, move |_| {
            let mut file = File::open(&at.path).map_err(|e| at.io(e))?;
            let size = file.metadata().map_err(|e| at.io(e))?.len();
            let range = range.resolve(&at.key, size)?;
            file.seek(SeekFrom::Start(range.start))
                .map_err(|e| at.io(e))?;
            let mut bytes = vec![0; (range.end - range.start) as usize];
            file.read_exact(&mut bytes).map_err(|e| at.io(e))?;
            Ok(bytes.into())
        })
        .await
    }

    async fn get_range_stream(&self, key: &Key, range: ByteRange) -> Result<ByteStream> {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let at = self.inner.locate(key)?;
        let mut file = tokio::fs::File::open(&at.path)
            .await
            .map_err(|e| at.io(e))?;
        let size = file.metadata().await.map_err(|e| at.io(e))?.len();
        let range = range.resolve(&at.key, size)?;
        file.seek(std::io::SeekFrom::Start(range.start))
            .await
            .map_err(|e| at.io(e))?;
        let reader = file.take(range.end - range.start);
        Ok(tokio_util::io::ReaderStream::with_capacity(reader, 1 << 20).boxed())
    }

    async fn head(&self, key: &Key) -> Result<ObjectMeta> {
        let at = self.inner.locate(key)?;
        self.blocking(key, move |_| {
            let mut file = File::open(&at.path).map_err(|e| at.io(e))?;
            meta_of(&at.key, &mut file).map_err(|e| at.io(e))
        })
        .await
    }

    async fn put(&self, key: &Key, body: Bytes, mode: PutMode) -> Result<ETag> {
        let at = self.inner.locate(key)?;
        self.blocking(key, move |inner| {
            let etag = ETag::of_content(&body);
            let mut tmp = inner.temp_file(&at)?;
            tmp.write_all(&body).map_err(|e| at.io(e))?;
            inner.seal(&at, &tmp, &etag)?;
            inner.install(&at, tmp, mode)?;
            Ok(etag)
        })
        .await
    }

    async fn put_stream(&self, key: &Key, mut body: ByteStream, mode: PutMode) -> Result<ETag> {
        if matches!(mode, PutMode::Update(_)) {
            return Err(Error::Unsupported {
                operation: "streaming compare-and-swap",
            });
        }
        let at = self.inner.locate(key)?;
        let tmp = {
            let at = at.clone();
            self.blocking(key, move |inner| inner.temp_file(&at))
                .await?
        };
        let mut file = tokio::fs::File::from_std(tmp.reopen().map_err(|e| at.io(e))?);
        let mut hasher = ContentHasher::default();
        while let Some(chunk) = body.next().await {
            // On error `tmp` is dropped here, which removes the temporary file.
            let chunk = chunk.map_err(|e| at.io(e))?;
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(|e| at.io(e))?;
        }
        file.flush().await.map_err(|e| at.io(e))?;
        drop(file);
        let etag = hasher.finish();
        let tag = etag.clone();
        self.blocking(key, move |inner| {
            inner.seal(&at, &tmp, &tag)?;
            inner.install(&at, tmp, mode)
        })
        .await?;
        Ok(etag)
    }

    async fn delete(&self, key: &Key) -> Result<()> {
        let at = self.inner.locate(key)?;
        self.blocking(key, move |inner| {
            if !at.path.exists() {
                return Ok(());
            }
            let _lock = inner.lock(&at)?;
            match fs::remove_file(&at.path) {
                Ok(()) => inner.sync_dir(&at),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(at.io(e)),
            }
        })
        .await
    }

    fn list(&self, prefix: &str) -> BoxStream<'_, Result<ObjectMeta>> {
        // Walk only the directory the prefix's complete segments name.
        let dir_part = match prefix.rfind('/') {
            Some(i) => &prefix[..i],
            None => "",
        };
        let base = if dir_part.is_empty() {
            Ok(None)
        } else {
            Key::new(dir_part).map(Some)
        };
        let inner = self.inner.clone();
        let prefix = prefix.to_owned();
        let walk = async move {
            let base = match base {
                Ok(base) => base,
                Err(e) => return vec![Err(e)],
            };
            let start = match &base {
                Some(base) => match inner.locate(base) {
                    Ok(at) => at.path,
                    Err(e) => return vec![Err(e)],
                },
                None => inner.root.clone(),
            };
            let root = inner.root.clone();
            tokio::task::spawn_blocking(move || {
                let mut found = Vec::new();
                walk_dir(&root, &start, &prefix, &mut found);
                found
            })
            .await
            .unwrap_or_else(|e| {
                vec![Err(Error::Other {
                    key: String::new(),
                    source: Box::new(e),
                })]
            })
        };
        stream::once(walk).flat_map(stream::iter).boxed()
    }
}

/// Collects every object under `dir` whose key starts with `prefix`.
fn walk_dir(root: &Path, dir: &Path, prefix: &str, found: &mut Vec<Result<ObjectMeta>>) {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return,
        Err(e) => {
            found.push(Err(Error::from_io(dir.display().to_string(), e)));
            return;
        }
    };
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                found.push(Err(Error::from_io(dir.display().to_string(), e)));
                continue;
            }
        };
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with(RESERVED) {
            continue;
        }
        let path = entry.path();
        let Some(rel) = path
            .strip_prefix(root)
            .ok()
            .and_then(|p| p.to_str())
            .map(str::to_owned)
        else {
            continue;
        };
        let Ok(file_type) = entry.file_type() else {
            continue;
        };
        if file_type.is_dir() {
            // Descend only where keys with the prefix can be.
            let as_dir = format!("{rel}/");
            if as_dir.starts_with(prefix) || prefix.starts_with(&as_dir) {
                walk_dir(root, &path, prefix, found);
            }
        } else if file_type.is_file() && rel.starts_with(prefix) {
            let Ok(key) = Key::new(rel) else { continue };
            let meta = File::open(&path).and_then(|mut file| meta_of(&key, &mut file));
            match meta {
                Ok(meta) => found.push(Ok(meta)),
                // Deleted while listing: it is simply not there any more.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => found.push(Err(Error::from_io(key.as_str(), e))),
            }
        }
    }
}
