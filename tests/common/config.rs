//! The one way tests write a detector's configuration: a TOML table built from a base
//! and changed key by key, so no test spells out sections it does not care about.

use std::path::{Path, PathBuf};

use fraudstream::config::Config;
use toml::{Table, Value};

/// A configuration under construction.
#[derive(Debug, Clone, Default)]
pub struct TestConfig(Table);

impl TestConfig {
    /// Nothing set: the built-in defaults.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Every store local under `dir`: SQLite verdicts, the lake, the alerts and
    /// dead-letter files, the model store `dir/registry` (not polled); alerts not printed;
    /// the API on an ephemeral port.
    pub fn local(dir: &Path) -> Self {
        let d = dir.display();
        Self::empty()
            .set("verdicts.local_path", format!("{d}/verdicts.db"))
            .set("lake.location", format!("{d}/lake"))
            .set("alerts.stdout", false)
            .set("alerts.file", format!("{d}/alerts.jsonl"))
            .set("dlq.file", format!("{d}/dlq.jsonl"))
            .set("models.location", format!("{d}/registry"))
            .set("models.poll_interval", "0s")
            .set("api.address", "127.0.0.1:0")
    }

    /// Set the dotted `key` (tables are created on the way), replacing what was there.
    pub fn set(self, key: &str, value: impl Into<Value>) -> Self {
        self.set_path(&key.split('.').collect::<Vec<_>>(), value)
    }

    /// Remove the dotted `key`, if set.
    pub fn unset(self, key: &str) -> Self {
        self.unset_path(&key.split('.').collect::<Vec<_>>())
    }

    /// Set the key at `path`, for names with dots in them (`["kafka", "properties",
    /// "session.timeout.ms"]`).
    pub fn set_path(mut self, path: &[&str], value: impl Into<Value>) -> Self {
        let (table, last) = self.table_of(path);
        table.insert(last.to_owned(), value.into());
        self
    }

    /// Remove the key at `path`, if set.
    pub fn unset_path(mut self, path: &[&str]) -> Self {
        let (table, last) = self.table_of(path);
        table.remove(last);
        self
    }

    /// Set the librdkafka property `name` (`[kafka.properties]`).
    pub fn kafka_property(self, name: &str, value: &str) -> Self {
        self.set_path(&["kafka", "properties", name], value)
    }

    /// Merge `text`, a TOML document, over what is set (its keys win).
    pub fn merge(mut self, text: &str) -> Self {
        let other: Table = text
            .parse()
            .unwrap_or_else(|e| panic!("test config: {e}\n{text}"));
        merge(&mut self.0, other);
        self
    }

    /// The S3 test server's endpoint and credentials as the `[s3]` section.
    pub fn with_test_s3(self) -> Self {
        let s3 = super::s3_connection();
        self.set("s3.endpoint", s3.endpoint.unwrap_or_default())
            .set("s3.access_key_id", s3.access_key_id.unwrap_or_default())
            .set(
                "s3.secret_access_key",
                s3.secret_access_key
                    .map(|s| s.expose().to_owned())
                    .unwrap_or_default(),
            )
    }

    /// Verdicts in `table` on the DynamoDB test server (created when missing).
    pub fn with_test_dynamodb(self, table: &str) -> Self {
        self.set("verdicts.backend", "dynamodb")
            .set("verdicts.dynamodb.table", table)
            .set(
                "verdicts.dynamodb.endpoint",
                super::require("FRAUDSTREAM_TEST_DYNAMODB", "dynamodb"),
            )
            .set("verdicts.dynamodb.region", "us-east-1")
            .set("verdicts.dynamodb.access_key_id", "local")
            .set("verdicts.dynamodb.secret_access_key", "local-secret")
            .set("verdicts.dynamodb.create_table", true)
    }

    /// Read from `path` (a file a test wrote before).
    pub fn load(path: impl AsRef<Path>) -> Self {
        let text = std::fs::read_to_string(path.as_ref()).unwrap();
        Self::empty().merge(&text)
    }

    /// One member of a detector group: its static membership id and lake writer id.
    pub fn member(self, name: &str) -> Self {
        self.kafka_property("group.instance.id", name)
            .set("lake.writer.writer_id", name)
    }

    /// Entity features counted in Redis at `url`, under `prefix`.
    pub fn velocity_on_redis(self, url: &str, prefix: &str) -> Self {
        self.set("velocity.enabled", true)
            .set("velocity.store", "redis")
            .set("velocity.redis.url", url)
            .set("velocity.redis.prefix", prefix)
    }

    /// The TOML text.
    pub fn text(&self) -> String {
        toml::to_string(&self.0).unwrap()
    }

    /// Parsed as the detector parses a file (panics on a rejected config).
    pub fn parse(&self) -> Config {
        Config::parse("test.toml", &self.text())
            .unwrap_or_else(|e| panic!("test config rejected: {e}\n{}", self.text()))
    }

    /// Written to `path`, returned.
    pub fn write(&self, path: impl AsRef<Path>) -> PathBuf {
        let path = path.as_ref().to_path_buf();
        std::fs::write(&path, self.text()).unwrap();
        path
    }

    fn table_of<'a>(&mut self, path: &[&'a str]) -> (&mut Table, &'a str) {
        let (last, parents) = path.split_last().expect("a key");
        let mut table = &mut self.0;
        for &p in parents {
            table = table
                .entry(p)
                .or_insert_with(|| Value::Table(Table::new()))
                .as_table_mut()
                .unwrap_or_else(|| panic!("test config: {p} in {path:?} is not a table"));
        }
        (table, *last)
    }
}

fn merge(into: &mut Table, from: Table) {
    for (k, v) in from {
        match (into.get_mut(&k), v) {
            (Some(Value::Table(a)), Value::Table(b)) => merge(a, b),
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}

impl From<TestConfig> for String {
    fn from(c: TestConfig) -> Self {
        c.text()
    }
}
