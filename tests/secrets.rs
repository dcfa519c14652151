//! Secrets never show: the detector runs with every secret set (S3 and DynamoDB keys, the
//! webhook URL and a header, a Kafka SASL password, a digits-only secret from the
//! environment) and fails to start (its verdict store is unreachable); its logs at debug
//! level, its error output and the configuration's `Debug` hold none of them.

mod common;

const SECRETS: [&str; 6] = [
    "S3SECRETaaa111",
    "DYNAMOSECRETbbb222",
    "WEBHOOKPATHccc333",
    "HEADERSECRETddd444",
    "KAFKASECRETeee555",
    "987654321012",
];

/// Every secret in its place, every service at a dead port.
fn config(dir: &std::path::Path) -> String {
    let dead = common::dead_port();
    let at = format!("http://127.0.0.1:{dead}");
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/data/creditcard-sample.csv");
    common::TestConfig::local(dir)
        .unset("alerts.file")
        .unset("dlq.file")
        .set("source.kind", "kafka")
        .set("bootstrap.history", sample)
        .set("alerts.webhook.url", format!("{at}/hooks/{}", SECRETS[2]))
        .set_path(
            &["alerts", "webhook", "headers", "Authorization"],
            format!("Bearer {}", SECRETS[3]),
        )
        .set("kafka.brokers", format!("127.0.0.1:{dead}"))
        .kafka_property("sasl.password", SECRETS[4])
        .kafka_property("sasl.username", "user")
        .set("s3.endpoint", at.as_str())
        .set("s3.access_key_id", "key-id")
        .set("s3.secret_access_key", SECRETS[0])
        .set("verdicts.backend", "dynamodb")
        .set("verdicts.dynamodb.table", "t")
        .set("verdicts.dynamodb.endpoint", at.as_str())
        .set("verdicts.dynamodb.access_key_id", "key-id")
        .set("verdicts.dynamodb.secret_access_key", SECRETS[1])
        .text()
}

fn assert_clean(what: &str, text: &str) {
    for s in SECRETS {
        assert!(!text.contains(s), "{what} shows the secret {s}:\n{text}");
    }
}

#[test]
fn no_secret_in_logs_errors_or_debug_output() {
    let dir = tempfile::tempdir().unwrap();
    let text = config(dir.path());
    let path = dir.path().join("secret.toml");
    std::fs::write(&path, &text).unwrap();

    let out = common::fraudstream()
        .args(["--log", "debug", "run", "--config"])
        .arg(&path)
        .env("FRAUDSTREAM__S3__SECRET_ACCESS_KEY", SECRETS[5])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the verdict store is unreachable");
    assert!(stderr.contains("error:"), "{stderr}");
    assert!(stderr.contains("unreachable"), "{stderr}");
    assert!(stderr.contains("DEBUG"), "debug logs were on:\n{stderr}");
    assert_clean("stdout", &stdout);
    assert_clean("stderr", &stderr);

    // The configuration's Debug, with the digits-only secret from the environment.
    let cfg = fraudstream::config::Config::parse_with_env(
        "secret.toml",
        &text,
        [(
            "FRAUDSTREAM__S3__SECRET_ACCESS_KEY".to_owned(),
            SECRETS[5].to_owned(),
        )],
    )
    .unwrap();
    assert_eq!(
        cfg.s3
            .connection
            .secret_access_key
            .as_ref()
            .unwrap()
            .expose(),
        SECRETS[5]
    );
    assert_clean("Debug", &format!("{cfg:?}"));
    assert_clean("Debug (pretty)", &format!("{cfg:#?}"));

    // A type error in the environment does not print the value either.
    let err = fraudstream::config::Config::parse_with_env(
        "secret.toml",
        &text,
        [(
            "FRAUDSTREAM__SCORING__BATCH_SIZE".to_owned(),
            "KAFKASECRETeee555".to_owned(),
        )],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("batch_size"), "{err}");
}
