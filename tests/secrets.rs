//! Secrets never show: the detector runs with every secret set (S3 and DynamoDB keys, the
//! webhook URL and a header, a Kafka SASL password, a digits-only secret from the
//! environment) and fails to start (its verdict store is unreachable); its logs at debug
//! level, its error output and the configuration's `Debug` hold none of them.

use std::process::Command;

const SECRETS: [&str; 6] = [
    "S3SECRETaaa111",
    "DYNAMOSECRETbbb222",
    "WEBHOOKPATHccc333",
    "HEADERSECRETddd444",
    "KAFKASECRETeee555",
    "987654321012",
];

fn config(dir: &std::path::Path) -> String {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let d = dir.display();
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/data/creditcard-sample.csv");
    format!(
        r#"
[source]
kind = "kafka"

[bootstrap]
history = "{sample}"

[alerts]
stdout = false

[alerts.webhook]
url = "http://127.0.0.1:{dead}/hooks/{webhook}"
headers = {{ Authorization = "Bearer {header}" }}

[kafka]
brokers = "127.0.0.1:{dead}"

[kafka.properties]
"sasl.password" = "{kafka}"
"sasl.username" = "user"

[s3]
endpoint = "http://127.0.0.1:{dead}"
access_key_id = "key-id"
secret_access_key = "{s3}"

[verdicts]
backend = "dynamodb"

[verdicts.dynamodb]
table = "t"
endpoint = "http://127.0.0.1:{dead}"
access_key_id = "key-id"
secret_access_key = "{dynamo}"

[lake]
location = "{d}/lake"

[models]
location = "{d}/registry"
poll_interval = "0s"

[api]
address = "127.0.0.1:0"
"#,
        s3 = SECRETS[0],
        dynamo = SECRETS[1],
        webhook = SECRETS[2],
        header = SECRETS[3],
        kafka = SECRETS[4],
    )
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

    let out = Command::new(env!("CARGO_BIN_EXE_fraudstream"))
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
