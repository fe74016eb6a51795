//! The contract suite: the executable definition of an [`ObjectStore`] backend.
//!
//! Every backend's tests call [`contract_suite!`](crate::contract_suite) with a function
//! that makes a fresh, empty store; the macro expands to one test per case below, so a
//! test run names each case per backend. Each case assumes the store it is given is
//! empty and private to it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{self, StreamExt, TryStreamExt};

use crate::{ByteRange, ByteStream, ETag, Error, Key, ObjectStore, ObjectStoreExt, PutMode};

/// Expands to one `#[tokio::test]` per contract case. `$make` is an async closure or
/// function returning `Some((store, guard))`; the guard (a temporary directory, say)
/// lives until the case ends. `None` means the backend is not available here and the
/// case is skipped; the constructor must say so on stderr, and must panic instead when
/// the environment requires the backend.
#[macro_export]
macro_rules! contract_suite {
    ($make:expr) => {
        $crate::contract_suite!(@cases $make;
            round_trip, ranges, list_with_prefix, create_twice, stale_update,
                        update_missing, streaming_put, streaming_put_failure, file_put, delete,
            compare_and_swap_race);
    };
    (@cases $make:expr; $($case:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let Some((store, _guard)) = ($make)().await else { return };
                $crate::contract::$case(&store).await;
            }
        )*
    };
}

fn key(name: &str) -> Key {
    Key::new(name).expect("contract keys are valid")
}

async fn content(store: &dyn ObjectStore, key: &Key) -> Bytes {
    store.get(key).await.expect("object is readable").bytes
}

/// Writes, reads back and overwrites objects, empty ones included; `get`, `head` and the
/// put agree on size and tag; missing keys are `NotFound`.
pub async fn round_trip<S: ObjectStore>(store: &S) {
    let k = key("rt/dir/object");
    let etag = store
        .put(&k, Bytes::from_static(b"hello"), PutMode::Overwrite)
        .await
        .expect("put");
    let got = store.get(&k).await.expect("get");
    assert_eq!(&got.bytes[..], b"hello");
    assert_eq!(got.meta.size, 5);
    assert_eq!(got.meta.etag, etag, "get returns the tag the put returned");
    assert_eq!(got.meta.key, k);
    let head = store.head(&k).await.expect("head");
    assert_eq!((head.size, &head.etag), (5, &etag));
    assert_recent(&head);
    assert_recent(&got.meta);
    let listed = store.list_all("rt/dir/").await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_recent(&listed[0]);

    let etag2 = store
        .put(&k, Bytes::from_static(b"hello, again"), PutMode::Overwrite)
        .await
        .expect("overwrite");
    assert_ne!(etag, etag2, "new content, new tag");
    assert_eq!(&content(store, &k).await[..], b"hello, again");
    assert_eq!(store.head(&k).await.expect("head").etag, etag2);

    let empty = key("rt/empty");
    store
        .put(&empty, Bytes::new(), PutMode::Create)
        .await
        .expect("empty object");
    assert_eq!(store.head(&empty).await.expect("head").size, 0);
    assert!(content(store, &empty).await.is_empty());

    let binary: Bytes = (0..=255u8).cycle().take(70_000).collect::<Vec<_>>().into();
    let bin = key("rt/binary");
    store
        .put(&bin, binary.clone(), PutMode::Overwrite)
        .await
        .expect("binary");
    assert_eq!(content(store, &bin).await, binary);

    let missing = key("rt/missing");
    assert!(matches!(
        store.get(&missing).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        store.head(&missing).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        store.get_range(&missing, ByteRange::From(0)).await,
        Err(Error::NotFound { .. })
    ));
    assert!(store.get_opt(&missing).await.expect("get_opt").is_none());
}

/// The store says when the object was written, and it was just now (garbage collection
/// relies on it).
fn assert_recent(meta: &crate::ObjectMeta) {
    let modified = meta
        .modified
        .unwrap_or_else(|| panic!("{} has no modification time", meta.key));
    let now = std::time::SystemTime::now();
    let apart = now
        .duration_since(modified)
        .unwrap_or_else(|e| e.duration());
    assert!(
        apart < std::time::Duration::from_secs(300),
        "{} was modified {apart:?} away from now",
        meta.key
    );
}

/// Closed, clamped and open-ended ranges return exactly the selected bytes; ranges that
/// select nothing are refused.
pub async fn ranges<S: ObjectStore>(store: &S) {
    let k = key("ranges/object");
    let data: Bytes = (0..1000u32)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<_>>()
        .into();
    store
        .put(&k, data.clone(), PutMode::Overwrite)
        .await
        .expect("put");
    let read = |r: ByteRange| {
        let k = k.clone();
        async move { store.get_range(&k, r).await }
    };
    assert_eq!(
        read((0..10).into()).await.expect("head range"),
        data.slice(0..10)
    );
    assert_eq!(
        read((500..501).into()).await.expect("one byte"),
        data.slice(500..501)
    );
    assert_eq!(
        read((990..5000).into()).await.expect("clamped"),
        data.slice(990..)
    );
    assert_eq!(
        read(ByteRange::From(123)).await.expect("open"),
        data.slice(123..)
    );
    assert_eq!(read(ByteRange::From(0)).await.expect("whole"), data);
    assert_eq!(
        read(ByteRange::From(999)).await.expect("last"),
        data.slice(999..)
    );
    for range in [
        ByteRange::from(10..900),
        ByteRange::From(3),
        ByteRange::from(999..2000),
    ] {
        let streamed: Vec<Bytes> = store
            .get_range_stream(&k, range)
            .await
            .expect("range stream")
            .try_collect()
            .await
            .expect("stream reads");
        let whole: Vec<u8> = streamed.iter().flat_map(|b| b.iter().copied()).collect();
        assert_eq!(
            whole,
            read(range).await.expect("range"),
            "streamed {range:?}"
        );
    }
    assert!(matches!(
        store.get_range_stream(&k, ByteRange::From(1000)).await,
        Err(Error::InvalidRange { .. })
    ));
    for bad in [ByteRange::From(1000), ByteRange::from(1000..1010)] {
        assert!(
            matches!(read(bad).await, Err(Error::InvalidRange { .. })),
            "{bad:?} is past the end"
        );
    }
}

/// Number of keys [`list_with_prefix`] writes: more than one S3 listing page (1,000).
pub const LIST_KEYS: usize = 1_100;

/// `list` returns every key under a prefix, across pages, and nothing else.
pub async fn list_with_prefix<S: ObjectStore>(store: &S) {
    let names: Vec<String> = (0..LIST_KEYS)
        .map(|i| format!("list/many/{:02}/k{i:05}", i % 7))
        .collect();
    stream::iter(names.iter())
        .map(|name| async move {
            store
                .put(&key(name), Bytes::from(name.clone()), PutMode::Overwrite)
                .await
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await
        .expect("puts");
    for other in ["list/other/x", "list/manyfold", "lis", "list/many2"] {
        store
            .put(&key(other), Bytes::from_static(b"x"), PutMode::Overwrite)
            .await
            .expect("put");
    }

    let mut listed: Vec<String> = store
        .list_all("list/many/")
        .await
        .expect("list")
        .into_iter()
        .map(|meta| {
            assert_eq!(
                meta.size,
                meta.key.as_str().len() as u64,
                "size of {}",
                meta.key
            );
            meta.key.as_str().to_owned()
        })
        .collect();
    listed.sort();
    let mut expected = names.clone();
    expected.sort();
    assert_eq!(listed.len(), LIST_KEYS, "every key, across pages");
    assert_eq!(listed, expected);

    let mut partial: Vec<String> = keys_of(store, "list/many").await;
    partial.sort();
    assert_eq!(
        partial.len(),
        LIST_KEYS + 2,
        "a prefix need not end at a `/`"
    );
    assert!(partial.contains(&"list/manyfold".to_owned()));
    assert!(partial.contains(&"list/many2".to_owned()));

    assert_eq!(keys_of(store, "list/many/03/").await.len(), LIST_KEYS / 7);
    assert!(keys_of(store, "list/nothing/").await.is_empty());
    assert!(keys_of(store, "absent").await.is_empty());
    assert_eq!(
        keys_of(store, "").await.len(),
        LIST_KEYS + 4,
        "empty prefix lists all"
    );
}

async fn keys_of<S: ObjectStore>(store: &S, prefix: &str) -> Vec<String> {
    store
        .list_all(prefix)
        .await
        .expect("list")
        .into_iter()
        .map(|m| m.key.as_str().to_owned())
        .collect()
}

/// A second `Create` of a key fails with `AlreadyExists` and leaves the first content.
pub async fn create_twice<S: ObjectStore>(store: &S) {
    let k = key("create/once");
    let etag = store
        .put(&k, Bytes::from_static(b"first"), PutMode::Create)
        .await
        .expect("first create");
    let second = store
        .put(&k, Bytes::from_static(b"second"), PutMode::Create)
        .await;
    assert!(
        matches!(second, Err(Error::AlreadyExists { .. })),
        "second create: {second:?}"
    );
    let again = store
        .put(&k, Bytes::from_static(b"first"), PutMode::Create)
        .await;
    assert!(
        matches!(again, Err(Error::AlreadyExists { .. })),
        "same content: {again:?}"
    );
    let got = store.get(&k).await.expect("get");
    assert_eq!(&got.bytes[..], b"first");
    assert_eq!(got.meta.etag, etag);
}

/// `Update` with the current tag writes; with a stale tag it fails and changes nothing.
pub async fn stale_update<S: ObjectStore>(store: &S) {
    let k = key("update/stale");
    let v1 = store
        .put(&k, Bytes::from_static(b"v1"), PutMode::Create)
        .await
        .expect("create");
    let v2 = store
        .put(&k, Bytes::from_static(b"v2"), PutMode::Update(v1.clone()))
        .await
        .expect("update with current tag");
    assert_ne!(v1, v2);
    let stale = store
        .put(&k, Bytes::from_static(b"v3"), PutMode::Update(v1.clone()))
        .await;
    assert!(
        matches!(stale, Err(Error::Precondition { .. })),
        "stale update: {stale:?}"
    );
    let made_up = store
        .put(
            &k,
            Bytes::from_static(b"v3"),
            PutMode::Update(ETag::new("\"not-a-tag\"")),
        )
        .await;
    assert!(
        matches!(made_up, Err(Error::Precondition { .. })),
        "{made_up:?}"
    );
    let got = store.get(&k).await.expect("get");
    assert_eq!(&got.bytes[..], b"v2", "a failed update leaves the object");
    assert_eq!(got.meta.etag, v2);
    store
        .put(&k, Bytes::from_static(b"v3"), PutMode::Update(v2))
        .await
        .expect("update with the tag of v2");
    assert_eq!(&content(store, &k).await[..], b"v3");
}

/// `Update` of a key that does not exist, or no longer does, fails and creates nothing.
pub async fn update_missing<S: ObjectStore>(store: &S) {
    let k = key("update/missing");
    let tag = ETag::of_content(b"whatever");
    let result = store
        .put(&k, Bytes::from_static(b"x"), PutMode::Update(tag))
        .await;
    assert!(
        matches!(result, Err(Error::Precondition { .. })),
        "{result:?}"
    );
    assert!(matches!(store.head(&k).await, Err(Error::NotFound { .. })));

    let etag = store
        .put(&k, Bytes::from_static(b"here"), PutMode::Create)
        .await
        .expect("create");
    store.delete(&k).await.expect("delete");
    let result = store
        .put(&k, Bytes::from_static(b"back"), PutMode::Update(etag))
        .await;
    assert!(
        matches!(result, Err(Error::Precondition { .. })),
        "{result:?}"
    );
    assert!(matches!(store.head(&k).await, Err(Error::NotFound { .. })));
}

/// Size of the body [`streaming_put`] writes: more than 20 MiB, not a multiple of any
/// part size.
pub const STREAM_BYTES: usize = 20 * 1024 * 1024 + 12_345;

fn pattern(len: usize, seed: u8) -> Bytes {
    let mut state = u32::from(seed).wrapping_mul(2_654_435_761) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect::<Vec<_>>()
        .into()
}

fn chunked(data: Bytes, chunk: usize) -> ByteStream {
    let chunks: Vec<std::io::Result<Bytes>> = (0..data.len())
        .step_by(chunk)
        .map(|start| Ok(data.slice(start..(start + chunk).min(data.len()))))
        .collect();
    stream::iter(chunks).boxed()
}

/// A streamed body of more than 20 MiB in uneven chunks is stored whole; a streamed
/// `Create` of an existing key fails and leaves it; a streamed `Update` is refused.
pub async fn streaming_put<S: ObjectStore>(store: &S) {
    let k = key("stream/big");
    let data = pattern(STREAM_BYTES, 1);
    let etag = store
        .put_stream(&k, chunked(data.clone(), 1024 * 1024 + 7), PutMode::Create)
        .await
        .expect("streaming put");
    let head = store.head(&k).await.expect("head");
    assert_eq!(head.size, STREAM_BYTES as u64);
    assert_eq!(head.etag, etag);
    let got = store.get(&k).await.expect("get");
    assert!(got.bytes == data, "streamed content round-trips");
    assert_eq!(
        store
            .get_range(&k, (9_000_000..9_000_100).into())
            .await
            .expect("range across a part boundary"),
        data.slice(9_000_000..9_000_100)
    );

    let other = pattern(STREAM_BYTES, 2);
    let second = store
        .put_stream(&k, chunked(other.clone(), 3 * 1024 * 1024), PutMode::Create)
        .await;
    assert!(
        matches!(second, Err(Error::AlreadyExists { .. })),
        "second streaming create: {second:?}"
    );
    assert_eq!(
        store.head(&k).await.expect("head").etag,
        etag,
        "left as it was"
    );

    let small = key("stream/small");
    store
        .put_stream(
            &small,
            chunked(Bytes::from_static(b"tiny body"), 4),
            PutMode::Create,
        )
        .await
        .expect("small streaming put");
    assert_eq!(&content(store, &small).await[..], b"tiny body");

    let overwritten = store
        .put_stream(
            &k,
            chunked(other.clone(), 8 * 1024 * 1024),
            PutMode::Overwrite,
        )
        .await
        .expect("streaming overwrite");
    assert_ne!(overwritten, etag);
    assert!(content(store, &k).await == other);

    let cas = store
        .put_stream(&k, chunked(data, 1 << 20), PutMode::Update(overwritten))
        .await;
    assert!(matches!(cas, Err(Error::Unsupported { .. })), "{cas:?}");
}

/// A body stream that fails part-way leaves nothing at the key.
pub async fn streaming_put_failure<S: ObjectStore>(store: &S) {
    let k = key("stream/broken");
    let good = pattern(10 * 1024 * 1024, 3);
    let chunks: Vec<std::io::Result<Bytes>> = vec![
        Ok(good.slice(..9 * 1024 * 1024)),
        Ok(good.slice(9 * 1024 * 1024..)),
        Err(std::io::Error::other("client went away")),
    ];
    let result = store
        .put_stream(&k, stream::iter(chunks).boxed(), PutMode::Create)
        .await;
    assert!(result.is_err(), "a failed body is an error");
    assert!(
        matches!(store.head(&k).await, Err(Error::NotFound { .. })),
        "nothing stored after a failed streaming put"
    );
    assert!(
        keys_of(store, "stream/").await.is_empty(),
        "no partial object listed"
    );
}

/// A file is stored whole by `put_file`, which keeps `Create`'s meaning.
pub async fn file_put<S: ObjectStore>(store: &S) {
    let dir = std::env::temp_dir().join(format!(
        "stowage-contract-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("body");
    let data = pattern(9 * 1024 * 1024 + 5, 4);
    std::fs::write(&path, &data).expect("write the file");
    let k = key("file/pack");
    let etag = store
        .put_file(&k, &path, PutMode::Create)
        .await
        .expect("file put");
    assert_eq!(store.head(&k).await.expect("head").etag, etag);
    assert!(content(store, &k).await == data, "the file round-trips");
    let again = store.put_file(&k, &path, PutMode::Create).await;
    assert!(
        matches!(again, Err(Error::AlreadyExists { .. })),
        "second create: {again:?}"
    );
    let missing = store
        .put_file(&key("file/none"), &dir.join("missing"), PutMode::Create)
        .await;
    assert!(missing.is_err(), "a missing file is an error");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `delete` removes the object and is idempotent.
pub async fn delete<S: ObjectStore>(store: &S) {
    let k = key("delete/me");
    store
        .put(&k, Bytes::from_static(b"x"), PutMode::Create)
        .await
        .expect("create");
    store.delete(&k).await.expect("delete");
    assert!(matches!(store.get(&k).await, Err(Error::NotFound { .. })));
    assert!(keys_of(store, "delete/").await.is_empty());
    store.delete(&k).await.expect("second delete");
    store
        .delete(&key("delete/never-existed"))
        .await
        .expect("delete of a missing key");
    store
        .put(&k, Bytes::from_static(b"again"), PutMode::Create)
        .await
        .expect("create after delete");
    assert_eq!(&content(store, &k).await[..], b"again");
}

/// Reads the counter at `key` and writes it back plus one by compare-and-swap,
/// retrying until its own write wins. Returns how many attempts lost a race.
pub async fn increment(store: &dyn ObjectStore, key: &Key) -> u64 {
    let mut lost = 0;
    loop {
        let current = store.get(key).await.expect("counter is readable");
        let value: u64 = std::str::from_utf8(&current.bytes)
            .ok()
            .and_then(|s| s.parse().ok())
            .expect("counter holds a number");
        let next = Bytes::from((value + 1).to_string());
        match store
            .put(key, next, PutMode::Update(current.meta.etag))
            .await
        {
            Ok(_) => return lost,
            Err(Error::Precondition { .. }) => lost += 1,
            Err(e) if e.is_retryable() => lost += 1,
            Err(e) => panic!("increment failed: {e}"),
        }
        // Back off a little, with jitter, so the losers do not collide again at once.
        let jitter = (lost * 7 + u64::from(std::process::id() % 13)) % 11;
        tokio::time::sleep(Duration::from_millis(1 + jitter)).await;
    }
}

/// Workers in [`compare_and_swap_race`].
pub const RACE_WORKERS: u64 = 8;
/// Increments each worker makes in [`compare_and_swap_race`].
pub const RACE_INCREMENTS: u64 = 10;

/// 8 workers x 10 increments of one counter through `Update` with retries end at exactly
/// 80: no update is lost, none applied twice.
pub async fn compare_and_swap_race<S: ObjectStore + Clone>(store: &S) {
    let k = key("race/counter");
    store
        .put(&k, Bytes::from_static(b"0"), PutMode::Create)
        .await
        .expect("create counter");
    let store: Arc<dyn ObjectStore> = Arc::new(store.clone());
    let workers: Vec<_> = (0..RACE_WORKERS)
        .map(|_| {
            let store = store.clone();
            let k = k.clone();
            tokio::spawn(async move {
                let mut lost = 0;
                for _ in 0..RACE_INCREMENTS {
                    lost += increment(store.as_ref(), &k).await;
                }
                lost
            })
        })
        .collect();
    let mut lost = 0;
    for worker in workers {
        lost += worker.await.expect("worker finished");
    }
    let total = content(store.as_ref(), &k).await;
    assert_eq!(
        std::str::from_utf8(&total).expect("utf-8"),
        (RACE_WORKERS * RACE_INCREMENTS).to_string(),
        "every increment counted exactly once ({lost} attempts lost a race and retried)"
    );
}
