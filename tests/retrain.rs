//! The retraining gate against real services: history CSVs in S3 (SeaweedFS), the model
//! store in S3, the `fraudstream retrain` binary. The gate grades both models only on rows
//! neither trained on: a candidate trained on shuffled labels is rejected and the live
//! model stays; a candidate better than a weak live model is published; a live model
//! whose training rows make up most of the history is not graded on them (the bias that
//! kept a weaker model serving); too little fresh data says so and publishes nothing.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use fraudstream::eval::evaluate;
use fraudstream::pipeline::{TrainOptions, train_model};
use fraudstream::registry::{HoldoutSet, ModelStore};
use fraudstream::schema::csv::write_kaggle_csv;
use fraudstream::schema::{Dataset, ReadOptions, TIME, read_dataset};
use fraudstream::storage::BlobStore;
use fraudstream::storage::s3::S3Store;
use serde_json::Value;

const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/creditcard-sample.csv");

/// The sample, ordered by time, with the labels of the oldest `shuffle_share` of the rows
/// shuffled among themselves (0: clean).
fn history(shuffle_share: f64) -> Dataset {
    let (data, _) = read_dataset(SAMPLE, ReadOptions::default()).unwrap();
    let mut order: Vec<usize> = (0..data.len()).collect();
    order.sort_by(|&a, &b| data.columns[TIME][a].total_cmp(&data.columns[TIME][b]));
    let mut d = data.select(&order);
    let k = (d.len() as f64 * shuffle_share) as usize;
    let mut rng = fastrand(7);
    for i in (1..k).rev() {
        let j = (rng() % (i as u64 + 1)) as usize;
        d.labels.swap(i, j);
    }
    d
}

/// A tiny deterministic generator (the test needs no randomness crate).
fn fastrand(seed: u64) -> impl FnMut() -> u64 {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    }
}

/// A model trained as `train` and the bootstrap do (a stratified 80%), with the rows it
/// held out.
fn model(data: &Dataset, trees: usize) -> (fraudstream::model::Model, HoldoutSet) {
    let mut opts = TrainOptions::default();
    opts.params.n_trees = trees;
    let outcome = train_model(data, "test", &opts, &|| {}).unwrap();
    let holdout = HoldoutSet::of_split(data, &outcome.test_rows);
    (outcome.model, holdout)
}

/// The oldest `share` of `data` (which is in time order).
fn oldest(data: &Dataset, share: f64) -> Dataset {
    data.select(&(0..(data.len() as f64 * share) as usize).collect::<Vec<_>>())
}

struct Setup {
    dir: tempfile::TempDir,
    bucket: String,
    prefix: String,
    blobs: Arc<dyn BlobStore>,
    store: ModelStore,
}

async fn setup() -> Setup {
    let bucket = common::test_bucket().await;
    let prefix = common::unique("retrain");
    let mut s3 = common::s3_settings(&bucket);
    s3.prefix = format!("{prefix}/");
    let blobs: Arc<dyn BlobStore> = Arc::new(S3Store::new(&s3).await);
    let models: Arc<dyn BlobStore> = {
        let mut m = s3.clone();
        m.prefix = format!("{prefix}/registry/");
        Arc::new(S3Store::new(&m).await)
    };
    Setup {
        dir: tempfile::tempdir().unwrap(),
        bucket,
        prefix,
        blobs,
        store: ModelStore::new(models),
    }
}

impl Setup {
    async fn upload(&self, key: &str, d: &Dataset) {
        let mut buf = Vec::new();
        write_kaggle_csv(&mut buf, (0..d.len()).map(|i| d.row(i)), true, true).unwrap();
        self.blobs.put(key, Bytes::from(buf)).await.unwrap();
    }

    async fn publish(&self, (m, holdout): &(fraudstream::model::Model, HoldoutSet)) {
        self.store.put_with_holdout(m, Some(holdout)).await.unwrap();
        let before = self.store.latest().await.unwrap();
        self.store
            .set_latest(m.version(), before.as_ref())
            .await
            .unwrap();
    }

    fn retrain(&self) -> Value {
        self.retrain_with("")
    }

    /// `fraudstream retrain` with extra `[retrain]` keys.
    fn retrain_with(&self, extra: &str) -> Value {
        let (bucket, prefix) = (&self.bucket, &self.prefix);
        let path = common::TestConfig::empty()
            .with_test_s3()
            .set(
                "models.location",
                format!("s3://{bucket}/{prefix}/registry/"),
            )
            .set(
                "retrain.history",
                vec![format!("s3://{bucket}/{prefix}/history/")],
            )
            .set("retrain.holdout", "time")
            .set("retrain.test_fraction", 0.25)
            .set("retrain.tolerance", 0.01)
            .set("retrain.min_auprc", 0.0)
            .set("retrain.trees", 30)
            .set("retrain.min_gate_rows", 300)
            .merge(&format!("[retrain]\n{extra}"))
            .write(self.dir.path().join("retrain.toml"));
        let out = common::fraudstream()
            .args(["retrain", "--json", "--config", path.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_trained_on_shuffled_labels_is_rejected() {
    let s = setup().await;
    // The live model trained on the oldest 75%: the newest 25% are rows it never saw.
    let good = model(&oldest(&history(0.0), 0.75), 50);
    s.publish(&good).await;
    // The oldest 75% (what the candidate trains on) have shuffled labels; the gate rows,
    // the newest 25%, are clean.
    let noisy = history(0.75);
    let half = noisy.len() / 2;
    s.upload(
        "history/part-1.csv",
        &noisy.select(&(0..half).collect::<Vec<_>>()),
    )
    .await;
    s.upload(
        "history/part-2.csv",
        &noisy.select(&(half..noisy.len()).collect::<Vec<_>>()),
    )
    .await;

    let d = s.retrain();
    assert_eq!(d["decision"], "rejected", "{d}");
    assert_eq!(d["published"], Value::Bool(false), "{d}");
    assert!(d["reason"].as_str().unwrap().contains("worse"), "{d}");
    assert_eq!(
        d["rows_read"].as_u64().unwrap() as usize,
        noisy.len(),
        "both files read"
    );
    assert!(d["candidate_auprc"].as_f64().unwrap() < d["live_auprc"].as_f64().unwrap());
    assert!(d["difference"]["high"].as_f64().unwrap() < 0.0, "{d}");
    let latest = s.store.latest().await.unwrap().unwrap();
    assert_eq!(latest.version, good.0.version(), "the live model stays");
    // A refused candidate is not stored (an hourly retrain must not grow the store).
    let candidate = d["candidate"].as_str().unwrap();
    assert!(s.store.manifest(candidate).await.is_err());
    assert_eq!(
        s.store.list().await.unwrap(),
        vec![good.0.version().to_owned()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_better_candidate_is_published() {
    let s = setup().await;
    // A weak live model: trained on labels shuffled throughout.
    let weak = model(&history(1.0), 5);
    s.publish(&weak).await;
    s.upload("history/creditcard.csv", &history(0.0)).await;

    let d = s.retrain();
    assert_eq!(d["decision"], "published", "{d}");
    assert!(d["candidate_auprc"].as_f64().unwrap() > d["live_auprc"].as_f64().unwrap());
    assert!(d["difference"]["low"].as_f64().unwrap() > 0.0, "{d}");
    // Graded only on the rows the live model held out.
    assert_eq!(d["holdout_rows"], d["unseen_rows"], "{d}");
    let clean = history(0.0);
    let held_out = (0..clean.len())
        .filter(|&i| weak.1.contains_row(&clean, i))
        .count();
    assert_eq!(d["holdout_rows"].as_u64().unwrap() as usize, held_out);
    assert!(held_out > 600, "about 20% of 3,446 rows: {held_out}");
    let latest = s.store.latest().await.unwrap().unwrap();
    assert_eq!(latest.version, d["candidate"].as_str().unwrap());
    let manifest = s.store.manifest(&latest.version).await.unwrap();
    assert_eq!(
        manifest.parent.as_deref(),
        Some(weak.0.version()),
        "lineage recorded"
    );
    assert!(
        manifest.metadata.holdout_metrics.is_some(),
        "holdout metrics in the manifest"
    );
    assert!(manifest.metadata.train_window.is_some(), "training window");
    let held = s.store.holdout(&manifest).await.unwrap().unwrap();
    let gate_rows = d["holdout_rows"].as_u64().unwrap() as usize;
    assert!(
        held.len() <= gate_rows && held.len() * 10 > gate_rows * 9,
        "{}",
        held.len()
    );
}

/// The scenario: the live model trained on a stratified 80% of every row the
/// history holds (as the bootstrap does), so a holdout of "the most recent rows" is
/// mostly its own training rows, where a forest of deep trees is nearly perfect. The old
/// gate graded it there and kept it; the fair gate grades both on the rows it held out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_model_is_not_graded_on_its_own_training_rows() {
    let s = setup().await;
    let all = history(0.0);
    // Three deep trees: close to perfect on their training rows, weaker elsewhere.
    let live = model(&all, 3);
    s.publish(&live).await;
    // The history is those rows again in another order and without ids (so each row's
    // id is its new row number): the held-out rows are recognised by their values.
    let reversed = all.select(&(0..all.len()).rev().collect::<Vec<_>>());
    let mut buf = Vec::new();
    write_kaggle_csv(
        &mut buf,
        (0..reversed.len()).map(|i| reversed.row(i)),
        true,
        false,
    )
    .unwrap();
    s.blobs
        .put("history/lake.csv", Bytes::from(buf))
        .await
        .unwrap();

    // What the live model scores on the newest 25% (the old gate's holdout), which it
    // mostly trained on.
    let newest = all.select(&((all.len() * 3 / 4)..all.len()).collect::<Vec<_>>());
    let newest_labels = newest.labels().unwrap();
    let inflated = evaluate(&live.0.score_dataset(&newest).unwrap(), &newest_labels, 0.5)
        .auprc
        .unwrap();

    let d = s.retrain();
    assert_eq!(d["decision"], "published", "{d}");
    let held_out = (0..all.len())
        .filter(|&i| live.1.contains_row(&all, i))
        .count();
    assert_eq!(d["unseen_rows"].as_u64().unwrap() as usize, held_out, "{d}");
    assert!(held_out > 600, "{held_out}");
    let live_fair = d["live_auprc"].as_f64().unwrap();
    assert!(
        live_fair < inflated,
        "graded on unseen rows ({live_fair}) rather than its own ({inflated}): {d}"
    );
    assert!(d["candidate_auprc"].as_f64().unwrap() > live_fair, "{d}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_little_fresh_data_publishes_nothing_and_says_so() {
    let s = setup().await;
    // Trained on every row (no holdout): no row of this history is unseen by it.
    let all = history(0.0);
    let mut opts = TrainOptions::default();
    opts.params.n_trees = 5;
    opts.split = fraudstream::eval::SplitKind::None;
    let m = train_model(&all, "test", &opts, &|| {}).unwrap().model;
    s.publish(&(m.clone(), HoldoutSet::default())).await;
    s.upload("history/creditcard.csv", &all).await;

    let d = s.retrain();
    assert_eq!(d["decision"], "insufficient_data", "{d}");
    assert_eq!(d["published"], Value::Bool(false));
    assert_eq!(d["holdout_rows"], 0, "{d}");
    assert_eq!(d["needed_frauds"], 30, "{d}");
    assert!(d["candidate"].is_null(), "nothing trained: {d}");
    let reason = d["reason"].as_str().unwrap();
    assert!(
        reason.contains("0 frauds") && reason.contains("30 frauds"),
        "{reason}"
    );
    assert_eq!(
        s.store.latest().await.unwrap().unwrap().version,
        m.version()
    );

    // Then 400 fresh rows after its window, 10 of them frauds: still too few frauds.
    let labels = all.labels().unwrap();
    let frauds = (0..all.len()).filter(|&i| labels[i] == 1).take(10);
    let legit = (0..all.len()).filter(|&i| labels[i] == 0).take(390);
    let mut fresh = all.select(&frauds.chain(legit).collect::<Vec<_>>());
    let last = all.columns[TIME].iter().copied().fold(0.0, f64::max);
    for i in 0..fresh.len() {
        fresh.columns[TIME][i] += last + 1.0;
        fresh.ids[i] = format!("fresh-{i}");
    }
    s.upload("history/fresh.csv", &fresh).await;
    let d = s.retrain();
    assert_eq!(d["decision"], "insufficient_data", "{d}");
    assert_eq!(d["unseen_rows"], 400, "{d}");
    assert_eq!(d["holdout_frauds"], 10, "{d}");
    assert!(d["reason"].as_str().unwrap().contains("10 frauds"), "{d}");
    // With a lower minimum the same data is enough to decide.
    let d = s.retrain_with("min_gate_frauds = 10");
    assert_ne!(d["decision"], "insufficient_data", "{d}");
}

/// The live model's `holdout.bin` lost: the gate falls back to its training window alone
/// (fewer rows count as unseen, never more) and still decides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_holdout_record_falls_back_to_the_training_window() {
    let s = setup().await;
    let all = history(0.0);
    let live = model(&oldest(&all, 0.75), 20);
    s.publish(&live).await;
    s.upload("history/creditcard.csv", &all).await;
    let holdout_key = format!("registry/models/{}/holdout.bin", live.0.version());
    s.blobs.delete(&holdout_key).await.unwrap();

    let d = s.retrain();
    let window = live.0.meta().train_window.unwrap();
    let after = all.columns[TIME]
        .iter()
        .filter(|&&t| !window.contains(t))
        .count();
    assert_eq!(d["unseen_rows"].as_u64().unwrap() as usize, after, "{d}");
    assert_ne!(d["decision"], "insufficient_data", "{d}");
}

/// `retrain.sample_bucket`: a history whose last 12 hours are thin (their legitimate
/// rows not all in yet), sampled to a budget below it. The thin span keeps every row, the
/// busy spans share the rest of the budget, every fraud is kept, and the decision says
/// what each span kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stratified_sample_keeps_a_thin_recent_span_whole() {
    const SPAN: f64 = 43_200.0;
    let s = setup().await;
    let all = history(0.0);
    let labels = all.labels().unwrap();
    // The last span's legitimate rows, one in ten.
    let keep: Vec<usize> = (0..all.len())
        .filter(|&i| labels[i] == 1 || all.columns[TIME][i] < 3.0 * SPAN || i % 10 == 0)
        .collect();
    let history = all.select(&keep);
    s.upload("history/creditcard.csv", &history).await;
    let seen = |span: usize, class: u8| {
        (0..history.len())
            .filter(|&i| {
                (history.columns[TIME][i] / SPAN) as usize == span
                    && history.labels[i] == Some(class)
            })
            .count() as u64
    };

    let d = s.retrain_with("max_rows = 1200\nsample_bucket = \"12h\"");
    assert_eq!(d["rows_used"], 1200, "{d}");
    assert_eq!(d["decision"], "published", "{d}");
    let spans = d["spans"].as_array().expect("spans reported");
    assert_eq!(spans.len(), 4, "{d}");
    let field = |k: usize, f: &str| spans[k][f].as_u64().unwrap();
    let frauds: u64 = (0..4).map(|k| seen(k, 1)).sum();
    let room = 1200 - frauds;
    let thin = seen(3, 0);
    assert!(thin > 50 && thin < 150, "{thin}");
    assert_eq!(field(3, "legit_kept"), thin, "the thin span whole: {d}");
    for k in 0..3 {
        assert_eq!(field(k, "legit_seen"), seen(k, 0), "{d}");
        assert_eq!(field(k, "frauds_kept"), seen(k, 1), "every fraud kept: {d}");
        let share = (room - thin) as f64 / 3.0;
        assert!(
            (field(k, "legit_kept") as f64 - share).abs() <= 1.0,
            "a fair share ({share:.1}) for span {k}: {d}"
        );
        assert!(field(k, "legit_kept") < field(k, "legit_seen"), "{d}");
    }
    assert_eq!(spans[3]["start"].as_f64().unwrap(), 3.0 * SPAN);
}
