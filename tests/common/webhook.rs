//! A local HTTP endpoint for webhook tests.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// One request the test endpoint received.
#[derive(Debug, Clone)]
pub struct Request {
    /// The request line and headers.
    pub head: String,
    /// The body.
    pub body: Vec<u8>,
}

/// A local HTTP endpoint answering each request with the next scripted reply (the last
/// one repeats): a status code, or `None` for no answer at all (a hung server).
pub struct Endpoint {
    /// Its URL (the path holds a "secret").
    pub url: String,
    received: Arc<Mutex<Vec<Request>>>,
}

impl Endpoint {
    /// Start it.
    pub async fn start(script: Vec<Option<u16>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/hooks/s3cr3t-token",
            listener.local_addr().unwrap()
        );
        let received = Arc::new(Mutex::new(Vec::new()));
        let seen = received.clone();
        tokio::spawn(async move {
            let mut n = 0usize;
            loop {
                let (mut sock, _) = listener.accept().await.unwrap();
                let reply = script[n.min(script.len() - 1)];
                n += 1;
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let (head, body_start) = loop {
                        let k = sock.read(&mut chunk).await.unwrap();
                        if k == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..k]);
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break (String::from_utf8_lossy(&buf[..i]).into_owned(), i + 4);
                        }
                    };
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse().ok())?
                        })
                        .unwrap_or(0);
                    while buf.len() < body_start + len {
                        let k = sock.read(&mut chunk).await.unwrap();
                        if k == 0 {
                            break;
                        }
                        buf.extend_from_slice(&chunk[..k]);
                    }
                    seen.lock().unwrap().push(Request {
                        head,
                        body: buf[body_start..].to_vec(),
                    });
                    match reply {
                        Some(status) => {
                            let resp = format!(
                                "HTTP/1.1 {status} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                            );
                            sock.write_all(resp.as_bytes()).await.unwrap();
                        }
                        None => tokio::time::sleep(Duration::from_secs(60)).await,
                    }
                });
            }
        });
        Self { url, received }
    }

    /// The requests so far.
    pub fn requests(&self) -> Vec<Request> {
        self.received.lock().unwrap().clone()
    }
}
