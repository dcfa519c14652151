//! The `BlobStore` conformance suite, run against every backend: a local directory,
//! SeaweedFS (S3) and HDFS, plus each backend's error cases against real servers.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use fraudstream::secret::Secret;
use fraudstream::storage::hdfs::HdfsStore;
use fraudstream::storage::local::LocalStore;
use fraudstream::storage::s3::{MULTIPART_PART_SIZE, S3Store};
use fraudstream::storage::{BlobStore, Condition, StorageError};

/// Everything every backend must do. `large` is the size of the large-object case.
async fn conformance(store: Arc<dyn BlobStore>, large: usize, cas: bool) {
    let what = store.describe();
    // Round trip and overwrite.
    store
        .put("a/b/one.bin", Bytes::from_static(b"first"))
        .await
        .unwrap();
    let got = store.get("a/b/one.bin").await.unwrap();
    assert_eq!(got.data, Bytes::from_static(b"first"), "{what}");
    store
        .put("a/b/one.bin", Bytes::from_static(b"second"))
        .await
        .unwrap();
    let got2 = store.get("a/b/one.bin").await.unwrap();
    assert_eq!(got2.data, Bytes::from_static(b"second"));
    assert_ne!(got.etag, got2.etag, "{what}: etag changes with content");
    // An idempotent rewrite leaves one object with the same content.
    store
        .put("a/b/one.bin", Bytes::from_static(b"second"))
        .await
        .unwrap();
    let got2 = store.get("a/b/one.bin").await.unwrap();
    assert_eq!(got2.data, Bytes::from_static(b"second"));

    // ETag-aware reads.
    assert!(
        store
            .get_if_changed("a/b/one.bin", Some(&got2.etag))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .get_if_changed("a/b/one.bin", Some("stale"))
            .await
            .unwrap()
            .is_some()
    );

    // Listing by prefix, sorted, without temporary files.
    store
        .put("a/b/two.bin", Bytes::from_static(b"2"))
        .await
        .unwrap();
    store
        .put("a/c/three.bin", Bytes::from_static(b"333"))
        .await
        .unwrap();
    store.put("z.bin", Bytes::from_static(b"z")).await.unwrap();
    let keys: Vec<String> = store
        .list("a/")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(
        keys,
        ["a/b/one.bin", "a/b/two.bin", "a/c/three.bin"],
        "{what}"
    );
    let in_b = store.list("a/b/").await.unwrap();
    assert_eq!(in_b.len(), 2);
    assert_eq!(in_b[0].size, 6);
    assert!(store.list("nothing/").await.unwrap().is_empty());

    // Missing objects.
    match store.get("a/missing.bin").await {
        Err(StorageError::NotFound { key, .. }) => assert_eq!(key, "a/missing.bin"),
        other => panic!("{what}: expected NotFound, got {other:?}"),
    }
    store.delete("a/b/two.bin").await.unwrap();
    store.delete("a/b/two.bin").await.unwrap();
    assert!(matches!(
        store.get("a/b/two.bin").await,
        Err(StorageError::NotFound { .. })
    ));

    // Unsafe keys are refused before any I/O.
    assert!(matches!(
        store.put("../escape", Bytes::new()).await,
        Err(StorageError::InvalidKey { .. })
    ));

    // A large object (multipart on S3, several blocks on HDFS) comes back byte for byte.
    let big: Vec<u8> = (0..large).map(|i| (i * 31 % 251) as u8).collect();
    store
        .put("big/object.bin", Bytes::from(big.clone()))
        .await
        .unwrap();
    let back = store.get("big/object.bin").await.unwrap();
    assert_eq!(back.data.len(), big.len(), "{what}");
    assert!(back.data == big, "{what}: large object differs");

    // Conditional writes: if-absent, then compare-and-swap on the entity tag.
    let e1 = store
        .put_if("ptr", Bytes::from_static(b"v1"), Condition::IfAbsent)
        .await
        .unwrap();
    assert!(matches!(
        store
            .put_if("ptr", Bytes::from_static(b"v1b"), Condition::IfAbsent)
            .await,
        Err(StorageError::PreconditionFailed { .. })
    ));
    if cas {
        let e1 = store.get("ptr").await.unwrap().etag;
        let e2 = store
            .put_if(
                "ptr",
                Bytes::from_static(b"v2"),
                Condition::IfMatch(e1.clone()),
            )
            .await
            .unwrap();
        assert_ne!(e1, e2);
        assert!(matches!(
            store
                .put_if("ptr", Bytes::from_static(b"v3"), Condition::IfMatch(e1))
                .await,
            Err(StorageError::PreconditionFailed { .. })
        ));
        assert_eq!(
            store.get("ptr").await.unwrap().data,
            Bytes::from_static(b"v2")
        );
    } else {
        assert!(!e1.is_empty());
    }
}

#[tokio::test]
async fn local_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalStore::new(dir.path()).unwrap());
    conformance(store, 3 << 20, true).await;
    // No temporary files are left behind.
    let leftovers: Vec<_> = walk(dir.path())
        .into_iter()
        .filter(|p| p.contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p.display().to_string());
        }
    }
    out
}

#[tokio::test]
async fn s3_conformance() {
    let bucket = common::test_bucket().await;
    let mut s = common::s3_settings(&bucket);
    s.prefix = common::unique("conformance");
    let store = Arc::new(S3Store::new(&s).await);
    conformance(store, MULTIPART_PART_SIZE * 2 + 12_345, true).await;
}

#[tokio::test]
async fn hdfs_conformance() {
    let url = common::require("FRAUDSTREAM_TEST_HDFS", "hdfs");
    let root = format!("/{}", common::unique("conformance"));
    // 1 MiB blocks, so the large object spans several blocks.
    let store = Arc::new(HdfsStore::new(&url, &root, Some(1 << 20)).unwrap());
    conformance(store, (3 << 20) + 777, false).await;
}

#[tokio::test]
async fn s3_missing_bucket_is_named() {
    common::require("FRAUDSTREAM_TEST_S3", "s3");
    let s = common::s3_settings(&common::unique("missing").to_lowercase());
    let store = S3Store::new(&s).await;
    let e = store.list("k").await.unwrap_err();
    assert!(matches!(e, StorageError::NoContainer { .. }), "{e:?}");
}

#[tokio::test]
async fn s3_wrong_credentials_say_so_without_the_secret() {
    let bucket = common::test_bucket().await;
    let mut s = common::s3_settings(&bucket);
    s.connection.secret_access_key = Some(Secret::new("definitely-wrong-secret-value"));
    let store = S3Store::new(&s).await;
    let e = store.put("k", Bytes::from_static(b"x")).await.unwrap_err();
    assert!(matches!(e, StorageError::Denied { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("access denied"), "{msg}");
    assert!(
        !msg.contains("definitely-wrong-secret-value"),
        "secret leaked: {msg}"
    );
    assert!(!format!("{s:?}").contains("definitely-wrong-secret-value"));
}

#[tokio::test]
async fn s3_unreachable_names_the_endpoint() {
    let mut s = common::s3_settings("any");
    let endpoint = format!("http://127.0.0.1:{}", common::dead_port());
    s.connection.endpoint = Some(endpoint.clone());
    let store = S3Store::new(&s).await;
    let e = store.get("k").await.unwrap_err();
    assert!(matches!(e, StorageError::Unreachable { .. }), "{e:?}");
    assert!(e.to_string().contains(&endpoint), "{e}");
    assert!(fraudstream::retry::Retryable::is_retryable(&e));
}

#[tokio::test]
async fn hdfs_unreachable_names_the_endpoint() {
    let url = format!("hdfs://127.0.0.1:{}", common::dead_port());
    let e = match HdfsStore::new(&url, "/x", None) {
        Err(e) => e,
        Ok(store) => {
            let store = store.with_timeout(std::time::Duration::from_secs(3));
            store.get("k").await.unwrap_err()
        }
    };
    assert!(matches!(e, StorageError::Unreachable { .. }), "{e:?}");
    assert!(e.to_string().contains(&url), "{e}");
}
