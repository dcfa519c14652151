//! A server dying mid-write, simulated with a TCP proxy in front of the real S3 server
//! that cuts every connection once it has forwarded a set number of request bytes. The
//! write must be retried, then fail with a typed error; no partial object may become
//! visible; buffered lake rows must survive; and once the "server" is back, the same
//! writer must write every row exactly once.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use fraudstream::retry::{RetryPolicy, Retryable};
use fraudstream::sinks::lake::{LakeCompression, LakeSettings, LakeWriter, ScoredRecord};
use fraudstream::storage::BlobStore;
use fraudstream::storage::s3::S3Store;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Forwards 127.0.0.1:port to `upstream`; each connection is cut after `budget` bytes
/// from the client (`usize::MAX`: never).
struct Proxy {
    port: u16,
    budget: Arc<AtomicUsize>,
}

impl Proxy {
    async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let budget = Arc::new(AtomicUsize::new(usize::MAX));
        let b = budget.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let b = b.clone();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(&upstream).await {
                        relay(client, server, b.load(Ordering::SeqCst)).await;
                    }
                });
            }
        });
        Self { port, budget }
    }

    fn cut_after(&self, bytes: usize) {
        self.budget.store(bytes, Ordering::SeqCst);
    }

    fn restore(&self) {
        self.budget.store(usize::MAX, Ordering::SeqCst);
    }
}

async fn relay(client: TcpStream, server: TcpStream, budget: usize) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up = async {
        let mut buf = vec![0u8; 64 * 1024];
        let mut sent = 0usize;
        loop {
            let n = match cr.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let allowed = n.min(budget.saturating_sub(sent));
            if allowed > 0 && sw.write_all(&buf[..allowed]).await.is_err() {
                return;
            }
            sent += allowed;
            if allowed < n {
                return; // the "server" dies mid-request
            }
        }
    };
    let down = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match sr.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if cw.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    // When either direction ends, both sockets close.
    tokio::select! {
        () = up => {},
        () = down => {},
    }
}

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(100),
    }
}

/// A cutting proxy in front of the test S3 server, a store that writes through it, and
/// one that reads the same (unique) prefix directly.
async fn through_proxy() -> (Proxy, Arc<dyn BlobStore>, Arc<dyn BlobStore>) {
    let endpoint = common::require("FRAUDSTREAM_TEST_S3", "s3");
    let bucket = common::test_bucket().await;
    let proxy = Proxy::start(endpoint.trim_start_matches("http://").to_owned()).await;
    let mut direct = common::s3_settings(&bucket);
    direct.prefix = common::unique("outage");
    let mut via = direct.clone();
    via.connection.endpoint = Some(format!("http://127.0.0.1:{}", proxy.port));
    (
        proxy,
        Arc::new(S3Store::new(&via).await),
        Arc::new(S3Store::new(&direct).await),
    )
}

/// The lake's test record, with incompressible-ish values (so the file is large enough to
/// be cut mid-upload), all in one hour partition (so one file).
fn record(i: usize) -> ScoredRecord {
    let mut r = common::lake::record(i);
    for (j, v) in r.tx.values.iter_mut().enumerate() {
        *v = ((i * 7919 + j * 104_729) % 1_000_003) as f64 / 1_000_003.0;
    }
    r.scored_at_ms = common::lake::T0;
    r
}

#[tokio::test]
async fn s3_dying_mid_upload_leaves_nothing_half_written() {
    let (proxy, via, direct) = through_proxy().await;

    // A 20 MiB object (a multipart upload) through a server that dies after 3 MiB.
    let big = Bytes::from(
        (0..20 << 20)
            .map(|i: usize| (i * 131 % 251) as u8)
            .collect::<Vec<_>>(),
    );
    proxy.cut_after(3 << 20);
    let e = fraudstream::retry::retry(fast_retry(), "put", || via.put("big.bin", big.clone()))
        .await
        .unwrap_err();
    assert!(
        e.is_retryable(),
        "a dying server is a transient, typed error: {e:?}"
    );
    assert!(
        direct.list("").await.unwrap().is_empty(),
        "no partial object is visible"
    );

    // The server comes back: the same write succeeds, byte for byte.
    proxy.restore();
    via.put("big.bin", big.clone()).await.unwrap();
    assert!(direct.get("big.bin").await.unwrap().data == big);
}

#[tokio::test]
async fn lake_rows_survive_an_outage_and_are_written_once() {
    let (proxy, via, direct) = through_proxy().await;
    let settings = LakeSettings {
        max_rows: usize::MAX,
        max_bytes: usize::MAX,
        max_age: Duration::from_secs(3600),
        compression: LakeCompression::None,
        writer_id: "d1".into(),
    };
    let mut w = LakeWriter::new(via, settings).with_retry(fast_retry());
    let n = 20_000;
    for i in 0..n {
        w.push(record(i));
    }
    proxy.cut_after(100 << 10);
    let e = w.flush().await.unwrap_err();
    assert!(e.is_retryable(), "{e:?}");
    assert_eq!(w.buffered(), n, "every buffered row is kept");
    assert!(
        direct.list("").await.unwrap().is_empty(),
        "no half-written file"
    );

    proxy.restore();
    let written = w.flush().await.unwrap();
    assert_eq!(written.len(), 1);
    let files = direct.list("").await.unwrap();
    assert_eq!(files.len(), 1);
    let data = direct.get(&files[0].key).await.unwrap().data;
    let rows: usize = ParquetRecordBatchReaderBuilder::try_new(data)
        .unwrap()
        .build()
        .unwrap()
        .map(|b| b.unwrap().num_rows())
        .sum();
    assert_eq!(rows, n);
}
