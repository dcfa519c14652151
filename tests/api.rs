//! The HTTP API, served in-process by a detector built from a configuration file
//! (`Detector::build_serving`, as `fraudstream serve` does), over real HTTP: every route,
//! every error status, authentication, the concurrency limit and the timeout, and an
//! OpenAPI document that lists every route the router has.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::TestConfig;
use common::http::Http;
use fraudstream::config::Config;
use fraudstream::detector::{Detector, Handles};
use fraudstream::model::Model;
use fraudstream::pipeline::{TrainOptions, train_model};
use fraudstream::registry::ModelStore;
use fraudstream::schema::json::encode_transaction;
use fraudstream::schema::{Dataset, ReadOptions, read_dataset};
use fraudstream::shutdown::Shutdown;
use fraudstream::storage::local::LocalStore;
use serde_json::{Value, json};

const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/creditcard-sample.csv");

fn model(data: &Dataset, seed: u64) -> Model {
    let mut opts = TrainOptions::default();
    opts.params.n_trees = 20;
    opts.params.seed = seed;
    train_model(data, SAMPLE, &opts, &|| {}).unwrap().model
}

/// A model store in `dir/registry` serving one model.
async fn publish_first(dir: &Path, m: &Model) -> ModelStore {
    let store = ModelStore::new(Arc::new(LocalStore::new(dir.join("registry")).unwrap()));
    store.put(m).await.unwrap();
    store.set_latest(m.version(), None).await.unwrap();
    store
}

/// The sample, a temporary directory, and a model store in it serving a model trained
/// with `seed`.
struct Fixture {
    data: Dataset,
    dir: tempfile::TempDir,
    first: Model,
    store: ModelStore,
}

async fn fixture(seed: u64) -> Fixture {
    let (data, _) = read_dataset(SAMPLE, ReadOptions::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let first = model(&data, seed);
    let store = publish_first(dir.path(), &first).await;
    Fixture {
        data,
        dir,
        first,
        store,
    }
}

/// A running API replica over `dir`'s stores, with `api`, lines of its `[api]` section.
async fn serve(dir: &Path, api: &str) -> (Http, Handles, Shutdown) {
    serve_config(replica(dir, api)).await
}

/// The configuration [`serve`] runs: every store local under `dir`.
fn replica(dir: &Path, api: &str) -> TestConfig {
    TestConfig::local(dir)
        .set("scoring.top_k", 3)
        .merge(&format!("[api]\n{api}"))
}

/// A running API replica configured by `config`.
async fn serve_config(config: TestConfig) -> (Http, Handles, Shutdown) {
    let cfg = config.parse();
    let detector = Detector::build_serving(&cfg).await.unwrap();
    let handles = detector.handles();
    let token = cfg.api.tokens.first().map(|t| t.expose().to_owned());
    let mut http = Http::new(handles.api_addr.unwrap());
    if let Some(t) = &token {
        http = http.with_token(t);
    }
    // Not ready until it runs.
    let r = http.post_json("/v1/score", &json!({})).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["code"], "not_ready");
    assert_eq!(http.get("/readyz").await.status, 503);
    let shutdown = Shutdown::new(Duration::from_secs(5));
    tokio::spawn(detector.run(shutdown.clone()));
    for _ in 0..100 {
        if http.get("/readyz").await.status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (Http::new(handles.api_addr.unwrap()), handles, shutdown)
}

fn tx_json(data: &Dataset, row: usize, id: Option<&str>) -> Value {
    let mut tx = data.row(row);
    tx.id = id.unwrap_or("placeholder").to_owned();
    let mut v: Value = serde_json::from_str(&encode_transaction(&tx)).unwrap();
    if id.is_none() {
        v.as_object_mut().unwrap().remove("id");
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_and_every_error() {
    let Fixture {
        data,
        dir,
        first,
        store,
    } = fixture(1).await;
    let (http, handles, shutdown) = serve(
        dir.path(),
        "admin = true\nmax_batch = 50\nmax_body_bytes = 65536",
    )
    .await;

    // Health and metrics.
    assert_eq!(http.get("/healthz").await.text(), "ok\n");
    assert_eq!(http.get("/readyz").await.status, 200);

    // One transaction: the model's own verdict, with contributions and input values.
    let r = http
        .post_json("/v1/score", &tx_json(&data, 7, Some("one")))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let want = first.verdict(&data.row(7), 3);
    assert_eq!(v["id"], "one");
    assert_eq!(v["score"].as_f64().unwrap() as f32, want.score);
    assert_eq!(v["fraud"], want.fraud);
    assert_eq!(v["model_version"], first.version());
    assert_eq!(v["threshold"].as_f64().unwrap(), first.meta().threshold);
    let c = v["contributions"].as_array().unwrap();
    assert_eq!(c.len(), want.top_features.len());
    let f = c[0]["feature"].as_str().unwrap();
    let field = fraudstream::schema::field_index(f).unwrap();
    assert_eq!(c[0]["value"].as_f64().unwrap(), data.row(7).values[field]);
    assert!(v.get("recorded").is_none());

    // An array keeps its order; a missing id becomes the position.
    let body = json!([
        tx_json(&data, 1, None),
        tx_json(&data, 2, Some("b")),
        tx_json(&data, 3, None)
    ]);
    let r = http.post_json("/v1/score", &body).await;
    let ids: Vec<String> = r
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["0", "b", "2"]);

    // 400 naming the field, single and in an array.
    let mut bad = tx_json(&data, 1, Some("bad"));
    bad["V3"] = json!("three");
    let r = http.post_json("/v1/score", &bad).await;
    assert_eq!(
        (
            r.status,
            r.json()["field"].clone(),
            r.json()["code"].clone()
        ),
        (400, json!("V3"), json!("wrong_type"))
    );
    let r = http
        .post_json("/v1/score", &json!([tx_json(&data, 1, None), bad]))
        .await;
    assert_eq!(r.json()["field"], "[1].V3");
    let mut missing = tx_json(&data, 1, Some("m"));
    missing.as_object_mut().unwrap().remove("Amount");
    assert_eq!(
        http.post_json("/v1/score", &missing).await.json()["code"],
        "missing_field"
    );
    let r = http
        .send("POST", "/v1/score", Some("application/json"), "{\"Time\": ")
        .await;
    assert_eq!(r.code(), (400, "invalid_json".into()));
    let long = json!({"id": "x".repeat(2000)});
    let mut long_id = tx_json(&data, 1, None);
    long_id["id"] = long["id"].clone();
    assert_eq!(
        http.post_json("/v1/score", &long_id).await.json()["code"],
        "invalid_id"
    );
    let many = Value::Array((0..51).map(|i| tx_json(&data, i, None)).collect());
    let r = http.post_json("/v1/score", &many).await;
    assert_eq!(r.code(), (400, "too_many".into()));
    // 413 and 415.
    let huge = "x".repeat(70_000);
    let r = http
        .send("POST", "/v1/score", Some("application/json"), huge)
        .await;
    assert_eq!(r.code(), (413, "too_large".into()));
    let r = http
        .send(
            "POST",
            "/v1/score",
            Some("text/plain"),
            tx_json(&data, 1, None).to_string(),
        )
        .await;
    assert_eq!(r.code(), (415, "unsupported_media_type".into()));

    // record=true: needs an id; writes once; a repeat returns the stored verdict.
    let r = http
        .post_json("/v1/score?record=true", &tx_json(&data, 4, None))
        .await;
    assert_eq!((r.status, r.json()["field"].clone()), (400, json!("id")));
    let r = http
        .post_json("/v1/score?record=true", &tx_json(&data, 4, Some("rec-1")))
        .await;
    assert_eq!(
        (r.status, r.json()["recorded"].clone()),
        (200, json!(true)),
        "{}",
        r.text()
    );
    let again = http
        .post_json("/v1/score?record=true", &tx_json(&data, 4, Some("rec-1")))
        .await;
    assert_eq!(again.json()["recorded"], false);
    assert_eq!(again.json()["score"], r.json()["score"]);
    let stored = http.get("/v1/verdicts/rec-1").await;
    assert_eq!(stored.status, 200);
    assert_eq!(stored.json()["score"], r.json()["score"]);
    assert_eq!(stored.json()["model_version"], first.version());
    let r = http.get("/v1/verdicts/nobody").await;
    assert_eq!(
        (
            r.status,
            r.json()["code"].clone(),
            r.json()["field"].clone()
        ),
        (404, json!("not_found"), json!("tx_id"))
    );

    // A recorded fraud raises an alert: in the ring and on the stream.
    let fraud_row = (0..data.len())
        .max_by(|&a, &b| {
            first
                .verdict(&data.row(a), 0)
                .score
                .total_cmp(&first.verdict(&data.row(b), 0).score)
        })
        .unwrap();
    assert!(first.verdict(&data.row(fraud_row), 0).fraud);
    let stream = {
        let http = http.clone();
        tokio::spawn(async move {
            http.first_event("/v1/alerts/stream", "alert", Duration::from_secs(10))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = http
        .post_json(
            "/v1/score?record=true",
            &tx_json(&data, fraud_row, Some("fraud-1")),
        )
        .await;
    assert_eq!(r.json()["fraud"], true);
    let streamed = stream.await.unwrap().expect("an alert event");
    assert_eq!(streamed["tx_id"], "fraud-1");
    let alerts = http.get("/v1/alerts?limit=10").await.json();
    assert_eq!(alerts[0]["tx_id"], "fraud-1");
    let seq = alerts[0]["seq"].as_u64().unwrap();
    assert_eq!(
        http.get(&format!("/v1/alerts?since={seq}")).await.json(),
        json!([])
    );
    assert_eq!(
        http.get("/v1/alerts?limit=0").await.json()["field"],
        "limit"
    );
    let file = std::fs::read_to_string(dir.path().join("alerts.jsonl")).unwrap();
    assert!(
        file.contains("fraud-1"),
        "through the configured alert sinks too"
    );

    // Monitoring: nothing streamed through this replica, so nothing counted yet.
    let m = http.get("/v1/monitoring").await;
    assert_eq!(m.status, 200);
    assert_eq!(m.json()["status"], "no_model_yet");
    assert_eq!(m.json()["bands"]["significant"], 0.25);

    // Stats and the event stream.
    let s = http.get("/v1/stats").await;
    assert_eq!(s.status, 200);
    assert_eq!(s.json()["model"]["version"], first.version());
    let ev = http
        .first_event("/v1/events", "stats", Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(ev["ready"], true);

    // Models: list, manifest, promote, rollback.
    let second = model(&data, 2);
    store.put(&second).await.unwrap();
    let list = http.get("/v1/models").await.json();
    assert_eq!(list["latest"], first.version());
    assert_eq!(list["serving"], first.version());
    assert_eq!(list["admin"], true);
    assert_eq!(list["versions"].as_array().unwrap().len(), 2);
    let m = http.get(&format!("/v1/models/{}", second.version())).await;
    assert_eq!(
        (m.status, m.json()["sha256"].as_str().map(str::len)),
        (200, Some(64))
    );
    assert_eq!(m.json()["canaries"].as_array().unwrap().len(), 10);
    assert_eq!(http.get("/v1/models/none-such").await.status, 404);
    assert_eq!(
        http.post_json("/v1/models/none-such/promote", &json!({}))
            .await
            .status,
        404
    );
    let moved = http
        .post_json(
            &format!("/v1/models/{}/promote", second.version()),
            &json!({}),
        )
        .await;
    assert_eq!(moved.status, 200, "{}", moved.text());
    assert_eq!(
        moved.json(),
        json!({"from": first.version(), "to": second.version()})
    );
    assert_eq!(
        store.latest().await.unwrap().unwrap().version,
        second.version()
    );
    let back = http
        .send("POST", "/v1/models/rollback", Some("application/json"), "")
        .await;
    assert_eq!(back.json()["to"], first.version());
    assert_eq!(handles.model.load().version(), first.version());

    // Metrics count the API.
    let metrics = http.get("/metrics").await.text();
    assert!(
        metrics.contains("fraudstream_api_requests_total{route=\"/v1/score\",status=\"400\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("fraudstream_api_recorded_total 2"),
        "{metrics}"
    );
    // Unknown routes are JSON 404s.
    assert_eq!(http.get("/v1/nothing").await.json()["code"], "not_found");
    shutdown.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_admin_limits_and_timeouts() {
    let Fixture { data, dir, .. } = fixture(3).await;

    // Tokens: required on every route but health and the page; header or query.
    let token = "a-long-enough-token-0123";
    let (http, _, stop) = serve(dir.path(), &format!("tokens = [\"{token}\"]")).await;
    let r = http.get("/v1/stats").await;
    assert_eq!(r.code(), (401, "unauthorized".into()));
    assert_eq!(
        http.with_token("wrong-token-0123456789")
            .get("/v1/stats")
            .await
            .status,
        401
    );
    assert_eq!(http.with_token(token).get("/v1/stats").await.status, 200);
    assert_eq!(
        http.get(&format!("/v1/stats?access_token={token}"))
            .await
            .status,
        200
    );
    assert_eq!(http.get("/healthz").await.status, 200);
    assert_eq!(http.get("/").await.status, 200);
    // Not an admin: moving models is refused.
    let r = http
        .with_token(token)
        .post_json("/v1/models/rollback", &json!({}))
        .await;
    assert_eq!(r.code(), (403, "forbidden".into()));
    stop.stop();

    // One request at a time: concurrent ones are answered 429 with Retry-After.
    let (http, _, stop) = serve(dir.path(), "concurrency = 1").await;
    let batch = Value::Array((0..1000).map(|i| tx_json(&data, i, None)).collect());
    let mut busy = 0;
    for r in http.post_concurrently("/v1/score", &batch, 12).await {
        if r.status == 429 {
            busy += 1;
            assert_eq!(r.header("retry-after"), Some("1"));
            assert_eq!(r.json()["code"], "busy");
        } else {
            assert_eq!(r.status, 200);
        }
    }
    assert!(busy > 0, "12 large requests at once past a limit of 1");
    stop.stop();

    // A request that takes longer than the timeout is answered 503.
    let (http, _, stop) = serve(dir.path(), "request_timeout = \"1ms\"").await;
    let r = http.post_json("/v1/score", &batch).await;
    assert_eq!(r.code(), (503, "timeout".into()));
    stop.stop();

    // Off loopback without tokens: refused at start.
    let e = Config::parse("x.toml", "[api]\naddress = \"0.0.0.0:9464\"\n").unwrap_err();
    assert!(e.to_string().contains("api.tokens"), "{e}");
}

/// Every `.route("…")` of the router, from its source.
fn routes_in_source() -> Vec<(String, String)> {
    let src = include_str!("../src/api/mod.rs");
    src.split(".route(\"")
        .skip(1)
        .map(|rest| {
            let path = rest.split('"').next().unwrap().to_owned();
            let method = rest
                .split(", ")
                .nth(1)
                .unwrap()
                .split('(')
                .next()
                .unwrap()
                .to_owned();
            (method, path)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_lists_every_route() {
    let Fixture { dir, .. } = fixture(4).await;
    let (http, _, stop) = serve(dir.path(), "").await;
    let doc = http.get("/v1/openapi.json").await.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let routes = routes_in_source();
    assert!(routes.len() >= 15, "{routes:?}");
    for (method, path) in &routes {
        let op = &doc["paths"][path][method];
        assert!(
            op.is_object(),
            "{method} {path} is not in the OpenAPI document"
        );
        assert!(
            op["responses"].is_object(),
            "{method} {path} documents no responses"
        );
    }
    let documented: usize = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|p| p.as_object().unwrap().len())
        .sum();
    assert_eq!(
        documented,
        routes.len(),
        "the document lists routes the router does not have"
    );
    stop.stop();
}

/// Issue 22's cross-site reproduction: a page the operator has open sends
/// `curl -X POST -H 'Origin: https://evil.example' -H 'Content-Type: text/plain' -d x
/// http://127.0.0.1:PORT/v1/models/rollback`; LATEST must not move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_requests_change_nothing() {
    let Fixture {
        data,
        dir,
        first,
        store,
    } = fixture(5).await;
    std::thread::sleep(Duration::from_millis(1_100));
    let second = model(&data, 6);
    store.put(&second).await.unwrap();
    let before = store.latest().await.unwrap();
    store
        .set_latest(second.version(), before.as_ref())
        .await
        .unwrap();
    let (http, handles, stop) = serve(dir.path(), "admin = true").await;
    let latest = || async { store.latest().await.unwrap().unwrap().version };
    let evil = http
        .send_with(
            "POST",
            "/v1/models/rollback",
            &[
                ("origin", "https://evil.example"),
                ("content-type", "text/plain"),
            ],
            "x",
        )
        .await;
    assert_eq!(evil.code(), (403, "cross_site".into()));
    let plain = http
        .send_with(
            "POST",
            "/v1/models/rollback",
            &[("content-type", "text/plain")],
            "x",
        )
        .await;
    assert_eq!(plain.status, 415, "{}", plain.text());
    let fetch_meta = http
        .send_with(
            "POST",
            "/v1/models/rollback",
            &[
                ("content-type", "application/json"),
                ("sec-fetch-site", "cross-site"),
            ],
            "{}",
        )
        .await;
    assert_eq!(fetch_meta.status, 403);
    let recorded = http
        .send_with(
            "POST",
            "/v1/score?record=true",
            &[
                ("origin", "https://evil.example"),
                ("content-type", "application/json"),
            ],
            tx_json(&data, 3, Some("csrf")).to_string(),
        )
        .await;
    assert_eq!(recorded.status, 403);
    assert_eq!(http.get("/v1/verdicts/csrf").await.status, 404);
    assert_eq!(latest().await, second.version(), "LATEST did not move");
    // The page itself (same origin, JSON, as the dashboard sends) may.
    let own = format!("http://{}", handles.api_addr.unwrap());
    let ok = http
        .send_with(
            "POST",
            "/v1/models/rollback",
            &[
                ("origin", own.as_str()),
                ("sec-fetch-site", "same-origin"),
                ("content-type", "application/json"),
            ],
            "{}",
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(latest().await, first.version());
    stop.stop();
}

/// `?access_token=` is percent-decoded: a token with `+ / = &` (encoded by the
/// dashboard's `encodeURIComponent`) works in the query as in the header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_with_reserved_characters_works_in_the_query() {
    let Fixture { dir, .. } = fixture(7).await;
    let token = "abc+def/ghi=jkl012345&x";
    let (http, _, stop) = serve(dir.path(), &format!("tokens = [\"{token}\"]")).await;
    assert_eq!(http.with_token(token).get("/v1/stats").await.status, 200);
    let encoded = "abc%2Bdef%2Fghi%3Djkl012345%26x";
    let r = http.get(&format!("/v1/stats?access_token={encoded}")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let ev = http
        .first_event(
            &format!("/v1/events?access_token={encoded}"),
            "stats",
            Duration::from_secs(5),
        )
        .await;
    assert!(ev.is_some(), "the dashboard's live stream connects");
    assert_eq!(
        http.get("/v1/stats?access_token=abc+def/ghi=jkl012345&x")
            .await
            .status,
        401,
        "undecoded, `+` is a space and `&` ends the value"
    );
    stop.stop();
}

/// `record=true` records each id once, in the store itself: 16 concurrent requests with
/// one new id give exactly one `recorded: true` and one alert; the same id twice in one
/// request is a 400 naming it. Against SQLite, or the DynamoDB table `dynamodb`.
async fn record_once(dynamodb: Option<&str>) {
    let Fixture {
        data, dir, first, ..
    } = fixture(8).await;
    let mut config = replica(dir.path(), "concurrency = 64");
    if let Some(table) = dynamodb {
        config = config.with_test_dynamodb(table);
    }
    let (http, handles, stop) = serve_config(config).await;
    let fraud_row = (0..data.len())
        .max_by(|&a, &b| {
            first
                .verdict(&data.row(a), 0)
                .score
                .total_cmp(&first.verdict(&data.row(b), 0).score)
        })
        .unwrap();
    let id = common::unique("rec");
    let body = tx_json(&data, fraud_row, Some(&id));
    let mut recorded = 0;
    for r in http
        .post_concurrently("/v1/score?record=true", &body, 16)
        .await
    {
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["fraud"], true);
        recorded += usize::from(r.json()["recorded"] == true);
    }
    assert_eq!(recorded, 1, "exactly one request recorded it");
    let alerts: Vec<_> = handles
        .alerts
        .latest(1000, 0)
        .into_iter()
        .filter(|a| serde_json::to_value(a).unwrap()["tx_id"] == id.as_str())
        .collect();
    assert_eq!(alerts.len(), 1, "one alert");
    let file = std::fs::read_to_string(dir.path().join("alerts.jsonl")).unwrap();
    assert_eq!(file.matches(id.as_str()).count(), 1, "{file}");

    let twice = json!([
        tx_json(&data, 1, Some("dup-a")),
        tx_json(&data, 2, Some("dup-b")),
        tx_json(&data, 3, Some("dup-a"))
    ]);
    let r = http.post_json("/v1/score?record=true", &twice).await;
    assert_eq!(
        (
            r.status,
            r.json()["code"].clone(),
            r.json()["field"].clone()
        ),
        (400, json!("duplicate_id"), json!("[2].id"))
    );
    assert_eq!(
        http.get("/v1/verdicts/dup-b").await.status,
        404,
        "nothing recorded"
    );
    stop.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_is_idempotent_by_id_on_sqlite() {
    record_once(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_is_idempotent_by_id_on_dynamodb() {
    record_once(Some(&common::unique("api-record"))).await;
}

/// Every rejection is JSON `{error, code, field}`: a bad query, a bad path segment, a bad
/// body and a wrong method, on every route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rejection_is_json() {
    let Fixture { data, dir, .. } = fixture(9).await;
    let (http, _, stop) = serve(dir.path(), "admin = true").await;
    let is_json_error = |r: &common::http::Answer, what: &str| {
        assert!(
            r.header("content-type")
                .is_some_and(|c| c.starts_with("application/json")),
            "{what}: {} {:?} {}",
            r.status,
            r.header("content-type"),
            r.text()
        );
        let v = r.json();
        assert!(
            v["error"].is_string() && v["code"].is_string(),
            "{what}: {v}"
        );
        assert!(v.get("field").is_some(), "{what}: {v}");
    };
    for (method, route) in routes_in_source() {
        let method = method.to_uppercase();
        let streams = route.ends_with("/stream") || route == "/v1/events";
        let bad_path = route.replace("{tx_id}", "%FF").replace("{version}", "%FF");
        let good_path = route.replace("{tx_id}", "x").replace("{version}", "none");
        let bad_query = format!("{good_path}?limit=abc&record=maybe&since=-1&after=%FF");
        let mut probes = vec![("DELETE", good_path.clone(), "application/json", "{}")];
        if bad_path != route {
            probes.push((method.as_str(), bad_path.clone(), "application/json", "{}"));
        }
        if !streams {
            probes.push((method.as_str(), bad_query, "application/json", "{}"));
            probes.push((
                method.as_str(),
                good_path.clone(),
                "application/json",
                "{not json",
            ));
        }
        for (m, path, ct, body) in probes {
            let r = http.send(m, &path, Some(ct), body.to_owned()).await;
            if r.status >= 400 {
                is_json_error(&r, &format!("{m} {path}"));
            }
        }
    }
    // The three of issue 22, by name.
    for (path, field) in [
        ("/v1/alerts?limit=abc", Some("limit")),
        ("/v1/verdicts/%FF", Some("tx_id")),
        ("/v1/models?limit=abc", Some("limit")),
    ] {
        let r = http.get(path).await;
        assert_eq!(r.status, 400, "{path}");
        is_json_error(&r, path);
        assert_eq!(r.json()["field"].as_str(), field, "{path}");
    }
    let r = http
        .post_json("/v1/score?record=maybe", &tx_json(&data, 1, Some("q")))
        .await;
    assert_eq!(
        (r.status, r.json()["field"].clone()),
        (400, json!("record"))
    );
    let r = http
        .send("PUT", "/v1/score", Some("application/json"), "{}")
        .await;
    assert_eq!(r.code(), (405, "method_not_allowed".into()));
    stop.stop();
}

/// Event streams are capped (`api.max_event_streams`): past the cap, 503 with
/// `Retry-After`; a closed stream frees its place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_are_capped() {
    let Fixture { dir, .. } = fixture(10).await;
    let (http, handles, stop) = serve(dir.path(), "max_event_streams = 2").await;
    let addr = handles.api_addr.unwrap();
    // A stream opened by hand: its status, and the connection to keep it open.
    let open = |path: &'static str| async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut head = vec![0u8; 64];
        let n = s.read(&mut head).await.unwrap();
        let status = String::from_utf8_lossy(&head[..n])
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse::<u16>().ok())
            .unwrap_or(0);
        (status, s)
    };
    let (sa, a) = open("/v1/events").await;
    let (sb, b) = open("/v1/alerts/stream").await;
    assert_eq!((sa, sb), (200, 200));
    let r = http.get("/v1/alerts/stream").await;
    assert_eq!(r.code(), (503, "busy".into()));
    assert!(r.header("retry-after").is_some());
    // A closed stream's place is freed once the server notices (at its next event).
    drop(a);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while open("/v1/events").await.0 != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "the place was never freed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(b);
    stop.stop();
}

/// `GET /v1/models` pages: `limit` and `after`, newest first, every version once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_are_listed_a_page_at_a_time() {
    let Fixture {
        data, dir, store, ..
    } = fixture(11).await;
    for seed in 12..16 {
        std::thread::sleep(Duration::from_millis(1_050));
        store.put(&model(&data, seed)).await.unwrap();
    }
    let (http, _, stop) = serve(dir.path(), "").await;
    let mut seen: Vec<String> = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..5 {
        let path = match &after {
            Some(a) => format!("/v1/models?limit=2&after={a}"),
            None => "/v1/models?limit=2".to_owned(),
        };
        let page = http.get(&path).await.json();
        let versions: Vec<String> = page["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["version"].as_str().unwrap().to_owned())
            .collect();
        assert!(versions.len() <= 2);
        seen.extend(versions);
        match page["next"].as_str() {
            Some(n) => after = Some(n.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 5, "{seen:?}");
    let mut sorted = seen.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(seen, sorted, "newest first, none twice");
    assert_eq!(http.get("/v1/models?limit=0").await.status, 400);
    stop.stop();
}
