//! An embedded SQLite verdict store.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};

use super::{VerdictError, VerdictItem, VerdictStore, dedupe_last};

/// How often expired verdicts are deleted, in seconds.
const PURGE_EVERY_SECS: i64 = 60;

/// Verdicts in one SQLite file (WAL mode, synchronous commits), one row per transaction
/// id. Verdicts with an expiry are not read back after it and are deleted within a
/// minute.
#[derive(Debug, Clone)]
pub struct LocalVerdictStore {
    path: PathBuf,
    conn: Arc<Mutex<Connection>>,
    last_purge: Arc<std::sync::atomic::AtomicI64>,
}

/// Columns added with decisions (nullable: older rows have none).
const DECISION_COLUMNS: [&str; 4] = ["outcome", "decided_by", "rules", "rule_set"];

/// The table, in arrival order: rows are appended under an increasing `seq`, and the
/// transaction id is a unique index beside them. Keyed by the id itself (`WITHOUT
/// ROWID`, as before), each batch of random ids (UUIDs) dirtied a leaf page of full rows
/// per verdict, and every one was written to the WAL at each commit: about 10 times the
/// CPU per verdict (`cargo bench --bench verdicts`).
const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS verdicts (
         seq INTEGER PRIMARY KEY,
         tx_id TEXT NOT NULL UNIQUE,
         score REAL NOT NULL,
         fraud INTEGER NOT NULL,
         threshold REAL NOT NULL,
         model_version TEXT NOT NULL,
         scored_at TEXT NOT NULL,
         top_features TEXT NOT NULL,
         ttl INTEGER,
         outcome TEXT,
         decided_by TEXT,
         rules TEXT,
         rule_set TEXT
     );
     CREATE INDEX IF NOT EXISTS verdicts_ttl ON verdicts (ttl) WHERE ttl IS NOT NULL;";

/// Every column but `seq`, in table order (a macro, for `concat!`).
macro_rules! columns {
    () => {
        "tx_id, score, fraud, threshold, model_version, scored_at, top_features, ttl, \
         outcome, decided_by, rules, rule_set"
    };
}

/// Rewrite a table keyed by transaction id (`WITHOUT ROWID`, before arrival order) as
/// [`CREATE_TABLE`], inside the schema transaction of [`LocalVerdictStore::open`]: a crash
/// leaves the old table whole.
fn migrate_to_arrival_order(tx: &rusqlite::Transaction<'_>, path: &Path) -> rusqlite::Result<()> {
    let started = std::time::Instant::now();
    tx.execute_batch("ALTER TABLE verdicts RENAME TO verdicts_by_id;")?;
    tx.execute_batch("DROP INDEX IF EXISTS verdicts_ttl;")?;
    tx.execute_batch(CREATE_TABLE)?;
    let rows = tx.execute(
        concat!(
            "INSERT INTO verdicts (",
            columns!(),
            ") SELECT ",
            columns!(),
            " FROM verdicts_by_id"
        ),
        [],
    )?;
    tx.execute_batch("DROP TABLE verdicts_by_id;")?;
    tracing::info!(
        path = %path.display(),
        rows,
        seconds = started.elapsed().as_secs_f64(),
        "verdict store rewritten in arrival order"
    );
    Ok(())
}

/// Reused buffers for a batch's JSON columns.
#[derive(Default)]
struct JsonBuffers {
    top: Vec<u8>,
    rules: Vec<u8>,
}

/// The statement that writes one verdict row, bound by `execute`: `$verb` says what
/// happens to a row with the same id (`INSERT OR REPLACE`, `INSERT OR IGNORE`).
macro_rules! insert_verdict {
    ($verb:literal) => {
        concat!(
            $verb,
            " INTO verdicts (",
            columns!(),
            ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
        )
    };
}

impl LocalVerdictStore {
    /// Open (creating when missing) the database at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, VerdictError> {
        let path = path.as_ref().to_path_buf();
        let fail = |e: &dyn std::fmt::Display| VerdictError::Other {
            store: path.display().to_string(),
            message: e.to_string(),
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| fail(&e))?;
        }
        let mut conn = Connection::open(&path).map_err(|e| fail(&e))?;
        conn.execute_batch(
            // FULL: a commit is on disk before `put_batch` returns, as the offsets
            // committed after it assume (NORMAL could lose the last commits on power loss).
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;",
        )
        .map_err(|e| fail(&e))?;
        // The whole schema step in one immediate transaction (the write lock first), so
        // that processes opening the file at once create, extend or migrate it once.
        let schema = |conn: &mut Connection| -> rusqlite::Result<()> {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let existing: Option<String> = tx
                .query_row(
                    "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'verdicts'",
                    [],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(sql) = existing {
                // A database written before decisions lacks their columns: add them (its
                // rows read back with the outcome the model's rule implies).
                let columns: Vec<String> = tx
                    .prepare("SELECT name FROM pragma_table_info('verdicts')")?
                    .query_map([], |r| r.get::<_, String>(0))?
                    .collect::<Result<_, _>>()?;
                for column in DECISION_COLUMNS {
                    if !columns.iter().any(|c| c == column) {
                        tx.execute(
                            &format!("ALTER TABLE verdicts ADD COLUMN {column} TEXT"),
                            [],
                        )?;
                    }
                }
                if sql.to_ascii_uppercase().contains("WITHOUT ROWID") {
                    migrate_to_arrival_order(&tx, &path)?;
                }
            }
            // Creates what is missing: the table of a new file, the expiry index.
            tx.execute_batch(CREATE_TABLE)?;
            tx.commit()
        };
        schema(&mut conn).map_err(|e| fail(&e))?;
        Ok(Self {
            path,
            conn: Arc::new(Mutex::new(conn)),
            last_purge: Arc::default(),
        })
    }

    fn fail(&self, e: &dyn std::fmt::Display) -> VerdictError {
        VerdictError::Other {
            store: self.describe(),
            message: e.to_string(),
        }
    }

    /// Classify a SQLite error: a busy, locked or full database, or an I/O error, may
    /// clear up (transient); anything else is this store's problem.
    fn error(&self, e: &rusqlite::Error) -> VerdictError {
        use rusqlite::ErrorCode as C;
        match e.sqlite_error_code() {
            Some(
                C::DatabaseBusy
                | C::DatabaseLocked
                | C::DiskFull
                | C::SystemIoFailure
                | C::OutOfMemory,
            ) => VerdictError::Transient {
                endpoint: self.describe(),
                message: e.to_string(),
            },
            _ => self.fail(e),
        }
    }

    fn put_sync(&self, items: &[VerdictItem]) -> Result<(), VerdictError> {
        use rusqlite::ErrorCode as C;
        let mut conn = self.conn.lock().map_err(|e| self.fail(&e))?;
        let tx = conn.transaction().map_err(|e| self.error(&e))?;
        let mut refused = Vec::new();
        {
            let mut stmt = tx
                .prepare_cached(insert_verdict!("INSERT OR REPLACE"))
                .map_err(|e| self.error(&e))?;
            let mut json = JsonBuffers::default();
            for it in dedupe_last(items) {
                match self.execute(&mut stmt, it, &mut json)? {
                    Ok(_) => {}
                    // This item only (a failed statement rolls back alone).
                    Err(e)
                        if matches!(
                            e.sqlite_error_code(),
                            Some(C::TooBig | C::ConstraintViolation | C::TypeMismatch)
                        ) =>
                    {
                        refused.push((it.tx_id.clone(), e.to_string()));
                    }
                    Err(e) => return Err(self.error(&e)),
                }
            }
        }
        self.purge_expired(&tx)?;
        tx.commit().map_err(|e| self.error(&e))?;
        if refused.is_empty() {
            Ok(())
        } else {
            Err(VerdictError::Refused {
                store: self.describe(),
                refused,
            })
        }
    }

    /// Delete verdicts past their expiry, at most once a minute (DynamoDB's TTL does
    /// this for its table).
    fn purge_expired(&self, tx: &rusqlite::Transaction<'_>) -> Result<(), VerdictError> {
        let now = crate::clock::now_secs();
        let last = self.last_purge.load(std::sync::atomic::Ordering::Relaxed);
        if now - last < PURGE_EVERY_SECS {
            return Ok(());
        }
        self.last_purge
            .store(now, std::sync::atomic::Ordering::Relaxed);
        tx.execute(
            "DELETE FROM verdicts WHERE ttl IS NOT NULL AND ttl < ?1",
            params![now],
        )
        .map_err(|e| self.error(&e))?;
        Ok(())
    }

    /// Run an insert `stmt` (`?1..?12`: the columns in table order) for `it`; `json` holds
    /// the buffers for the contributions' and the rules' JSON. The outer error is this store's (encoding);
    /// the inner one SQLite's, for the caller to classify.
    fn execute(
        &self,
        stmt: &mut rusqlite::CachedStatement<'_>,
        it: &VerdictItem,
        json: &mut JsonBuffers,
    ) -> Result<rusqlite::Result<usize>, VerdictError> {
        json.top.clear();
        serde_json::to_writer(&mut json.top, &it.top_features).map_err(|e| self.fail(&e))?;
        json.rules.clear();
        serde_json::to_writer(&mut json.rules, &it.rules).map_err(|e| self.fail(&e))?;
        let top = std::str::from_utf8(&json.top).map_err(|e| self.fail(&e))?;
        let rules = std::str::from_utf8(&json.rules).map_err(|e| self.fail(&e))?;
        Ok(stmt.execute(params![
            it.tx_id,
            f64::from(it.score),
            it.fraud,
            it.threshold,
            it.model_version,
            it.scored_at,
            top,
            it.ttl,
            it.outcome.as_str(),
            &*it.decided_by,
            rules,
            it.rule_set.as_deref()
        ]))
    }

    /// Insert each item unless its id has a live verdict: one transaction, an expired
    /// row deleted first, then `INSERT OR IGNORE` and its changed-row count.
    fn put_new_sync(&self, items: &[VerdictItem]) -> Result<Vec<bool>, VerdictError> {
        let mut conn = self.conn.lock().map_err(|e| self.fail(&e))?;
        let tx = conn.transaction().map_err(|e| self.error(&e))?;
        let mut written = Vec::with_capacity(items.len());
        {
            let mut expired = tx
                .prepare_cached(
                    "DELETE FROM verdicts WHERE tx_id = ?1 AND ttl IS NOT NULL AND ttl < ?2",
                )
                .map_err(|e| self.error(&e))?;
            let mut insert = tx
                .prepare_cached(insert_verdict!("INSERT OR IGNORE"))
                .map_err(|e| self.error(&e))?;
            let now = crate::clock::now_secs();
            let mut json = JsonBuffers::default();
            for it in items {
                expired
                    .execute(params![it.tx_id, now])
                    .map_err(|e| self.error(&e))?;
                let changed = self
                    .execute(&mut insert, it, &mut json)?
                    .map_err(|e| self.error(&e))?;
                written.push(changed == 1);
            }
        }
        tx.commit().map_err(|e| self.error(&e))?;
        Ok(written)
    }

    fn delete_sync(&self, tx_id: &str) -> Result<(), VerdictError> {
        let conn = self.conn.lock().map_err(|e| self.fail(&e))?;
        conn.execute("DELETE FROM verdicts WHERE tx_id = ?1", params![tx_id])
            .map_err(|e| self.error(&e))?;
        Ok(())
    }

    fn get_sync(&self, tx_id: &str) -> Result<Option<VerdictItem>, VerdictError> {
        let conn = self.conn.lock().map_err(|e| self.fail(&e))?;
        let row = conn
            .query_row(
                concat!(
                    "SELECT ",
                    columns!(),
                    " FROM verdicts WHERE tx_id = ?1 AND (ttl IS NULL OR ttl >= ?2)"
                ),
                params![tx_id, crate::clock::now_secs()],
                |r| {
                    Ok((
                        (
                            r.get::<_, String>(0)?,
                            r.get::<_, f64>(1)?,
                            r.get::<_, bool>(2)?,
                            r.get::<_, f64>(3)?,
                            r.get::<_, String>(4)?,
                            r.get::<_, String>(5)?,
                            r.get::<_, String>(6)?,
                            r.get::<_, Option<i64>>(7)?,
                        ),
                        (
                            r.get::<_, Option<String>>(8)?,
                            r.get::<_, Option<String>>(9)?,
                            r.get::<_, Option<String>>(10)?,
                            r.get::<_, Option<String>>(11)?,
                        ),
                    ))
                },
            )
            .optional()
            .map_err(|e| self.fail(&e))?;
        let Some((
            (tx_id, score, fraud, threshold, model_version, scored_at, top, ttl),
            (outcome, decided_by, rules, rule_set),
        )) = row
        else {
            return Ok(None);
        };
        let (implied, implied_by) = VerdictItem::implied_outcome(fraud);
        Ok(Some(VerdictItem {
            tx_id,
            score: score as f32,
            fraud,
            threshold,
            model_version: model_version.into(),
            scored_at: scored_at.into(),
            top_features: serde_json::from_str(&top).map_err(|e| self.fail(&e))?,
            ttl,
            outcome: match outcome {
                Some(o) => o.parse().map_err(|e: String| self.fail(&e))?,
                None => implied,
            },
            decided_by: decided_by.map_or(implied_by, Arc::from),
            rules: match rules {
                Some(r) => serde_json::from_str(&r).map_err(|e| self.fail(&e))?,
                None => Vec::new(),
            },
            rule_set: rule_set.map(Arc::from),
        }))
    }

    /// Number of stored verdicts.
    pub fn count(&self) -> Result<u64, VerdictError> {
        let conn = self.conn.lock().map_err(|e| self.fail(&e))?;
        conn.query_row("SELECT COUNT(*) FROM verdicts", [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(|e| self.fail(&e))
    }
}

#[async_trait]
impl VerdictStore for LocalVerdictStore {
    fn describe(&self) -> String {
        format!("sqlite:{}", self.path.display())
    }

    async fn put_batch(&self, items: &[VerdictItem]) -> Result<(), VerdictError> {
        let me = self.clone();
        let items = items.to_vec();
        tokio::task::spawn_blocking(move || me.put_sync(&items))
            .await
            .map_err(|e| self.fail(&e))?
    }

    async fn get(&self, tx_id: &str) -> Result<Option<VerdictItem>, VerdictError> {
        let me = self.clone();
        let id = tx_id.to_owned();
        tokio::task::spawn_blocking(move || me.get_sync(&id))
            .await
            .map_err(|e| self.fail(&e))?
    }

    async fn put_new(&self, items: &[VerdictItem]) -> Result<Vec<bool>, VerdictError> {
        let me = self.clone();
        let items = items.to_vec();
        tokio::task::spawn_blocking(move || me.put_new_sync(&items))
            .await
            .map_err(|e| self.fail(&e))?
    }

    async fn delete(&self, tx_id: &str) -> Result<(), VerdictError> {
        let me = self.clone();
        let id = tx_id.to_owned();
        tokio::task::spawn_blocking(move || me.delete_sync(&id))
            .await
            .map_err(|e| self.fail(&e))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::Outcome;

    fn table_sql(path: &Path) -> String {
        Connection::open(path)
            .unwrap()
            .query_row(
                "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'verdicts'",
                [],
                |r| r.get(0),
            )
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_store_keyed_by_id_from_before_decisions_is_rewritten_in_arrival_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("verdicts.db");
        // The first schema: keyed by id, no decision columns.
        let old = Connection::open(&path).unwrap();
        old.execute_batch(
            "CREATE TABLE verdicts (
                 tx_id TEXT PRIMARY KEY NOT NULL, score REAL NOT NULL, fraud INTEGER NOT NULL,
                 threshold REAL NOT NULL, model_version TEXT NOT NULL, scored_at TEXT NOT NULL,
                 top_features TEXT NOT NULL, ttl INTEGER
             ) WITHOUT ROWID;
             CREATE INDEX verdicts_ttl ON verdicts (ttl) WHERE ttl IS NOT NULL;
             INSERT INTO verdicts VALUES ('a', 0.9, 1, 0.5, 'v1', '2026-12-01T00:00:00.000Z', '[]', NULL);
             INSERT INTO verdicts VALUES ('b', 0.1, 0, 0.5, 'v1', '2026-12-01T00:00:00.000Z',
                 '[{\"feature\":\"V14\",\"contribution\":-0.25}]', 4102444800);",
        )
        .unwrap();
        drop(old);
        let store = LocalVerdictStore::open(&path).unwrap();
        assert!(
            !table_sql(&path)
                .to_ascii_uppercase()
                .contains("WITHOUT ROWID")
        );
        assert_eq!(store.count().unwrap(), 2);
        let a = store.get("a").await.unwrap().unwrap();
        assert_eq!((a.outcome, &*a.decided_by), (Outcome::Block, "model"));
        let b = store.get("b").await.unwrap().unwrap();
        assert_eq!(b.ttl, Some(4_102_444_800));
        assert_eq!(&*b.top_features[0].feature, "V14");
        // Written over, and a new one beside.
        let mut again = b.clone();
        again.score = 0.2;
        let mut c = b.clone();
        c.tx_id = "c".into();
        store.put_batch(&[again, c]).await.unwrap();
        assert_eq!(store.count().unwrap(), 3);
        assert!((store.get("b").await.unwrap().unwrap().score - 0.2).abs() < 1e-6);
        // Reopening leaves it as it is.
        drop(store);
        let store = LocalVerdictStore::open(&path).unwrap();
        assert_eq!(store.count().unwrap(), 3);
        let indexes: i64 = Connection::open(&path)
            .unwrap()
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name = 'verdicts_ttl'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(indexes, 1);
    }
}
