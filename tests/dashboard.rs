//! The dashboard in a real browser (Debian's headless Chromium, driven over WebDriver by
//! chromedriver) while loadgen streams into the detector: the counters move, alerts
//! appear with their contributions, a verdict lookup answers, and a screenshot is saved
//! to `target/test-artifacts/dashboard.png`.
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (`apt-get install chromium
//! chromium-driver`; `.ci/run` installs them); fails, never skips, without them.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use common::detector::Deployment;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A WebDriver session.
struct Browser {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
    session: String,
    driver: Child,
}

impl Browser {
    async fn start() -> Self {
        for bin in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(bin).exists(),
                "{bin} is missing: apt-get install -y chromium chromium-driver (.ci/run does)"
            );
        }
        let port = common::dead_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let client = Client::builder(TokioExecutor::new()).build_http();
        let base = format!("http://127.0.0.1:{port}");
        let mut b = Self {
            client,
            base,
            session: String::new(),
            driver,
        };
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                         "--no-first-run", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync",
                         "--window-size=1440,1000"]
            }
        }}});
        let deadline = Instant::now() + Duration::from_secs(30);
        let created = loop {
            if let Ok(v) = b.call("POST", "/session", Some(&caps)).await {
                break v;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        b.session = created["sessionId"].as_str().unwrap().to_owned();
        b
    }

    async fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
        let req = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(
                body.map_or_else(|| "{}".to_owned(), Value::to_string),
            )))
            .unwrap();
        let resp = self.client.request(req).await.map_err(|e| e.to_string())?;
        let ok = resp.status().is_success();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
        if ok {
            Ok(v["value"].clone())
        } else {
            Err(v.to_string())
        }
    }

    async fn session_call(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let p = format!("/session/{}{path}", self.session);
        self.call(method, &p, body).await.unwrap()
    }

    async fn open(&self, url: &str) {
        self.session_call("POST", "/url", Some(&json!({"url": url})))
            .await;
    }

    async fn eval(&self, script: &str) -> Value {
        self.session_call(
            "POST",
            "/execute/sync",
            Some(&json!({"script": script, "args": []})),
        )
        .await
    }

    async fn element(&self, css: &str) -> String {
        let v = self
            .session_call(
                "POST",
                "/element",
                Some(&json!({"using": "css selector", "value": css})),
            )
            .await;
        v[ELEMENT].as_str().unwrap().to_owned()
    }

    async fn text(&self, css: &str) -> String {
        let e = self.element(css).await;
        self.session_call("GET", &format!("/element/{e}/text"), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    async fn screenshot(&self, to: &Path) {
        let b64 = self.session_call("GET", "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap())
            .unwrap();
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::write(to, png).unwrap();
    }

    /// Wait until `script` returns a truthy value.
    async fn wait_for(&self, script: &str, timeout: Duration, what: &str) {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.eval(script).await;
            if v.as_bool() == Some(true) || v.as_f64().is_some_and(|x| x > 0.0) {
                return;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _killed = self.driver.kill();
        let _waited = self.driver.wait();
    }
}

fn count(text: &str) -> u64 {
    text.chars()
        .filter(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_stream_live() {
    let d = Deployment::new("dashboard").await;
    let config = d.write_config(false);
    // An active rule set: the decisions panel shows its rules' match rates.
    let rules = d.dir.path().join("rules.txt");
    std::fs::write(
        &rules,
        "rule big_amount: review if Amount > 150 and not fraud\n\
         rule model_fraud: block if fraud\n",
    )
    .unwrap();
    let published = common::fraudstream()
        .args(["rules", "publish", "--activate", "--config"])
        .arg(&config)
        .arg(&rules)
        .output()
        .unwrap();
    assert!(
        published.status.success(),
        "{}",
        String::from_utf8_lossy(&published.stderr)
    );
    let det = d.start(&config).await;
    let addr = det.handles.api_addr.unwrap();
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/data/creditcard-sample.csv");
    let mut load = common::loadgen()
        .args(["--input", sample, "--loop", "--rate", "400"])
        .args(["--brokers", &d.brokers, "--topic", &d.topic])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("loadgen: {e} (cargo build -p loadgen)"));

    let browser = Browser::start().await;
    browser.open(&format!("http://{addr}/")).await;
    let loaded = browser
        .eval("const n = performance.getEntriesByType('navigation')[0]; return n ? n.domContentLoadedEventEnd : -1;")
        .await;
    println!("dashboard: DOM ready {loaded} ms after navigation start");

    // The counters move.
    browser
        .wait_for(
            "return Number(document.getElementById('scored').textContent.replace(/\\D/g, '')) > 0",
            Duration::from_secs(60),
            "scored > 0",
        )
        .await;
    let first = count(&browser.text("#scored").await);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let later = count(&browser.text("#scored").await);
    assert!(
        later > first,
        "the scored counter did not move: {first} -> {later}"
    );
    assert_ne!(browser.text("#model-version").await, "–");
    assert_eq!(browser.text("#ready").await, "running");

    // Alerts appear, with their contribution bars.
    browser
        .wait_for(
            "return document.querySelectorAll('#alert-feed li.alert').length",
            Duration::from_secs(90),
            "an alert in the feed",
        )
        .await;
    let bars = browser
        .eval("return document.querySelectorAll('#alert-feed li.alert .bar').length")
        .await;
    assert!(
        bars.as_u64().unwrap() > 0,
        "alerts show their contributions"
    );
    let tx = browser
        .eval("return document.querySelector('#alert-feed li.alert').dataset.tx")
        .await
        .as_str()
        .unwrap()
        .to_owned();

    // A verdict lookup.
    let input = browser.element("#lookup-input").await;
    browser
        .session_call(
            "POST",
            &format!("/element/{input}/value"),
            Some(&json!({"text": tx})),
        )
        .await;
    let button = browser.element("#lookup-button").await;
    browser
        .session_call("POST", &format!("/element/{button}/click"), None)
        .await;
    browser
        .wait_for(
            "return document.getElementById('lookup-result').textContent.includes('score')",
            Duration::from_secs(10),
            "the lookup's answer",
        )
        .await;
    let answer = browser.text("#lookup-result").await;
    assert!(
        answer.starts_with("BLOCK") || answer.starts_with("REVIEW"),
        "an alert's verdict is a review or a block: {answer}"
    );

    // The decisions panel: the active rule set, each rule's matches, the outcome mix.
    browser
        .wait_for(
            "return [...document.querySelectorAll('#rule-rates tr')].some((r) => Number(r.children[2].textContent.replace(/\\D/g, '')) > 0)",
            Duration::from_secs(30),
            "a rule with matches in the decisions panel",
        )
        .await;
    let rules_shown = browser
        .eval("return [...document.querySelectorAll('#rule-rates tr')].map((r) => r.dataset.rule)")
        .await;
    assert_eq!(rules_shown, json!(["big_amount", "model_fraud"]));
    assert!(
        // (The heading is shown upper case.)
        browser
            .text("#rule-set")
            .await
            .to_lowercase()
            .starts_with("rule set "),
        "the active version is named"
    );
    let reviews = count(&browser.text("[data-outcome=review]").await);
    assert!(reviews > 0, "the outcome mix counts reviews");
    let sets = browser
        .eval("return document.querySelectorAll('#rule-sets tr').length")
        .await;
    assert_eq!(
        sets.as_u64(),
        Some(1),
        "one stored rule set, the active one"
    );

    // The drift panel: the serving model's reference is counted against (its features
    // ranked by PSI, each with its band).
    browser
        .wait_for(
            "return document.querySelectorAll('#drift-top tr').length",
            Duration::from_secs(30),
            "variables in the drift panel",
        )
        .await;
    assert!(
        browser
            .text("#drift-status")
            .await
            .to_lowercase()
            .starts_with("model "),
        "the drift panel names the model counted"
    );

    // Let the charts fill a little, then keep a screenshot.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let shot = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/target/test-artifacts/dashboard.png"
    ));
    browser.screenshot(&shot).await;
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000);
    println!("dashboard: screenshot at {}", shot.display());

    let _killed = load.kill();
    let _waited = load.wait();
    det.stop().await.unwrap();
}
