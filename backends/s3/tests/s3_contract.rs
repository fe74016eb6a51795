//! The contract suite on a real S3-compatible service (see `stowage_s3::testing` for
//! the endpoint and when an unreachable service fails the run instead of skipping).

use stowage_s3::testing::fresh_store;

stowage_store::contract_suite!(|| async { fresh_store().await.map(|store| (store, ())) });

/// A store under a key prefix sees and lists only its own keys.
#[tokio::test]
async fn prefix_isolates_stores() {
    use bytes::Bytes;
    use stowage_s3::{Location, S3Store};
    use stowage_store::{Key, ObjectStore, ObjectStoreExt, PutMode};

    let Some(root) = fresh_store().await else {
        return;
    };
    let bucket = root.location().bucket.clone();
    let scoped = S3Store::new(
        root.client().clone(),
        Location {
            bucket,
            prefix: "team/repos".into(),
        },
    );
    let key = Key::new("demo/manifest").expect("key");
    scoped
        .put(&key, Bytes::from_static(b"m"), PutMode::Create)
        .await
        .expect("put");
    root.put(
        &Key::new("elsewhere").expect("key"),
        Bytes::new(),
        PutMode::Create,
    )
    .await
    .expect("put");
    let listed = scoped.list_all("").await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].key, key);
    assert!(
        root.head(&Key::new("team/repos/demo/manifest").expect("key"))
            .await
            .is_ok()
    );
}
