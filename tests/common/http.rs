//! A small HTTP/1.1 client for API tests.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// An answer.
#[derive(Debug)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// Headers, lower-cased names.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The status and the JSON error's `code`, for comparing with an expected pair.
    pub fn code(&self) -> (u16, String) {
        let code = self.json()["code"].as_str().unwrap_or_default().to_owned();
        (self.status, code)
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A client of one server.
#[derive(Clone)]
pub struct Http {
    base: String,
    client: Client<HttpConnector, Full<Bytes>>,
    token: Option<String>,
}

impl Http {
    /// A client of `http://addr`.
    pub fn new(addr: std::net::SocketAddr) -> Self {
        Self {
            base: format!("http://{addr}"),
            client: Client::builder(TokioExecutor::new()).build_http(),
            token: None,
        }
    }

    /// The same client, sending `Authorization: Bearer <token>`.
    pub fn with_token(&self, token: &str) -> Self {
        Self {
            token: Some(token.to_owned()),
            ..self.clone()
        }
    }

    /// Send a request.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: impl Into<Bytes>,
    ) -> Answer {
        let headers: Vec<(&str, &str)> = content_type
            .map(|ct| ("content-type", ct))
            .into_iter()
            .collect();
        self.send_with(method, path, &headers, body).await
    }

    /// Send a request with these headers.
    pub async fn send_with(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Answer {
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let resp = tokio::time::timeout(
            Duration::from_secs(60),
            self.client
                .request(req.body(Full::new(body.into())).unwrap()),
        )
        .await
        .expect("an answer within 60 s")
        .unwrap();
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Answer {
            status,
            headers,
            body,
        }
    }

    /// GET.
    pub async fn get(&self, path: &str) -> Answer {
        self.send("GET", path, None, Bytes::new()).await
    }

    /// POST a JSON body.
    pub async fn post_json(&self, path: &str, body: &serde_json::Value) -> Answer {
        self.send("POST", path, Some("application/json"), body.to_string())
            .await
    }

    /// POST `body` to `path` from `n` tasks at once; the answers in no particular order.
    pub async fn post_concurrently(
        &self,
        path: &str,
        body: &serde_json::Value,
        n: usize,
    ) -> Vec<Answer> {
        let sends: Vec<_> = (0..n)
            .map(|_| {
                let (http, body, path) = (self.clone(), body.clone(), path.to_owned());
                tokio::spawn(async move { http.post_json(&path, &body).await })
            })
            .collect();
        let mut out = Vec::with_capacity(n);
        for s in sends {
            out.push(s.await.unwrap());
        }
        out
    }

    /// Open a server-sent event stream and return the first event named `event`, with
    /// its data, within `timeout` (`None` if none came).
    pub async fn first_event(
        &self,
        path: &str,
        event: &str,
        timeout: Duration,
    ) -> Option<serde_json::Value> {
        let mut req = hyper::Request::builder()
            .method("GET")
            .uri(format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let resp = self
            .client
            .request(req.body(Full::new(Bytes::new())).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        let mut body = resp.into_body();
        let mut text = String::new();
        let wanted = format!("event: {event}\n");
        let read = async {
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame.unwrap().into_data() {
                    text.push_str(&String::from_utf8_lossy(&data));
                }
                while let Some(end) = text.find("\n\n") {
                    let block: String = text.drain(..end + 2).collect();
                    if block.starts_with(&wanted) || block.contains(&format!("\n{wanted}")) {
                        let data = block
                            .lines()
                            .find_map(|l| l.strip_prefix("data: "))
                            .unwrap_or("null");
                        return serde_json::from_str(data).ok();
                    }
                }
            }
            None
        };
        tokio::time::timeout(timeout, read).await.ok().flatten()
    }
}
