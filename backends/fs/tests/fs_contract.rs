//! The contract suite on the filesystem store, plus what only a filesystem can get
//! wrong: separate processes racing, keys that try to leave the root, leftovers.

use std::process::Command;

use bytes::Bytes;
use stowage_fs::FsStore;
use stowage_store::contract::{self, RACE_INCREMENTS, RACE_WORKERS};
use stowage_store::{Error, Key, ObjectStore, ObjectStoreExt, PutMode};

async fn fresh() -> (FsStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    (FsStore::new(dir.path()).expect("store"), dir)
}

stowage_store::contract_suite!(|| async { Some(fresh().await) });

const RACE_DIR_VAR: &str = "STOWAGE_FS_RACE_DIR";

/// One worker of [`compare_and_swap_race_between_processes`]; run by that test in a
/// child process, ignored otherwise.
#[tokio::test]
#[ignore = "a worker process of compare_and_swap_race_between_processes"]
async fn race_worker_process() {
    let dir = std::env::var(RACE_DIR_VAR).expect("started by the race test");
    let store = FsStore::new(dir).expect("store");
    let key = Key::new("race/counter").expect("key");
    for _ in 0..RACE_INCREMENTS {
        contract::increment(&store, &key).await;
    }
}

/// The compare-and-swap race of the contract suite, with each worker a separate process.
#[tokio::test]
async fn compare_and_swap_race_between_processes() {
    let (store, dir) = fresh().await;
    let key = Key::new("race/counter").expect("key");
    store
        .put(&key, Bytes::from_static(b"0"), PutMode::Create)
        .await
        .expect("counter");
    let exe = std::env::current_exe().expect("test binary");
    let children: Vec<_> = (0..RACE_WORKERS)
        .map(|_| {
            Command::new(&exe)
                .args(["race_worker_process", "--exact", "--ignored", "--quiet"])
                .env(RACE_DIR_VAR, dir.path())
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("worker process starts")
        })
        .collect();
    for mut child in children {
        assert!(
            child.wait().expect("worker ends").success(),
            "worker failed"
        );
    }
    let total = store.get(&key).await.expect("counter").bytes;
    assert_eq!(
        std::str::from_utf8(&total).expect("utf-8"),
        (RACE_WORKERS * RACE_INCREMENTS).to_string()
    );
}

#[tokio::test]
async fn keys_stay_inside_the_root() {
    let (store, dir) = fresh().await;
    for hostile in ["../escape", "a/../../escape", "/etc/passwd", "a\0b", "a//b"] {
        assert!(
            matches!(Key::new(hostile), Err(Error::InvalidKey { .. })),
            "{hostile:?}"
        );
    }
    for reserved in [".stowage-lock.manifest", "repo/.stowage-tmp.x"] {
        let key = Key::new(reserved).expect("a valid key in general");
        let put = store
            .put(&key, Bytes::from_static(b"x"), PutMode::Overwrite)
            .await;
        assert!(
            matches!(put, Err(Error::InvalidKey { .. })),
            "{reserved}: {put:?}"
        );
    }
    assert!(
        store.list_all("../").await.is_err(),
        "a prefix cannot leave the root"
    );
    let outside = dir.path().parent().expect("parent").join("escape");
    assert!(!outside.exists());
}

#[tokio::test]
async fn own_files_are_not_listed() {
    let (store, dir) = fresh().await;
    let key = Key::new("repo/manifest").expect("key");
    let etag = store
        .put(&key, Bytes::from_static(b"1"), PutMode::Create)
        .await
        .expect("create");
    store
        .put(&key, Bytes::from_static(b"2"), PutMode::Update(etag))
        .await
        .expect("update leaves a lock file");
    // A temporary file left by a writer that crashed.
    std::fs::write(dir.path().join("repo/.stowage-tmp.abandoned"), b"partial").expect("write");
    let keys: Vec<String> = store
        .list_all("")
        .await
        .expect("list")
        .into_iter()
        .map(|m| m.key.to_string())
        .collect();
    assert_eq!(keys, ["repo/manifest"]);
}

#[tokio::test]
async fn tags_survive_without_extended_attributes() {
    // A file put in place by hand (no tag attribute) gets its tag from its content.
    let (store, dir) = fresh().await;
    std::fs::create_dir_all(dir.path().join("x")).expect("dir");
    std::fs::write(dir.path().join("x/plain"), b"by hand").expect("write");
    let key = Key::new("x/plain").expect("key");
    let head = store.head(&key).await.expect("head");
    assert_eq!(head.etag, stowage_store::ETag::of_content(b"by hand"));
    store
        .put(
            &key,
            Bytes::from_static(b"updated"),
            PutMode::Update(head.etag),
        )
        .await
        .expect("update against the computed tag");
}
