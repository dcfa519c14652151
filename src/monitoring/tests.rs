use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::pipeline::{TrainOptions, train_model};

/// A model trained on generated data (values uniform in [-2, 2]), and a matrix of `n`
/// rows in its feature order with `V4` moved by `shift`.
fn model_and_rows(n: usize, shift: f32) -> (Model, Vec<f32>, Vec<f32>) {
    let data = crate::test_support::dataset(4_000, 3);
    let mut opts = TrainOptions::default();
    opts.params.n_trees = 5;
    let model = train_model(&data, "test", &opts, &|| {}).unwrap().model;
    let live = crate::test_support::dataset(n, 11);
    let k = model.meta().features.len();
    let v4 = model
        .meta()
        .features
        .iter()
        .position(|f| f == "V4")
        .unwrap();
    let mut x = Vec::with_capacity(n * k);
    for i in 0..n {
        model.features_into(&live.row(i), &mut x);
        x[i * k + v4] += shift;
    }
    let mut scores = vec![0.0; n];
    model.forest().predict_into(&x, &mut scores);
    (model, x, scores)
}

fn config() -> MonitoringConfig {
    MonitoringConfig {
        min_rows: 500,
        window: 2_000,
        alert_after: Duration::ZERO,
        ..MonitoringConfig::default()
    }
}

#[test]
fn a_trained_model_carries_its_reference_and_live_data_like_it_is_stable() {
    let (model, x, scores) = model_and_rows(2_000, 0.0);
    let reference = model.reference().expect("training records a reference");
    assert_eq!(reference.features.len(), model.meta().features.len());
    assert_eq!(reference.score_source.as_deref(), Some("holdout"));
    let m = Monitor::new(config());
    assert_eq!(m.document().status, "no_model_yet");
    m.observe(&model, &x, &scores, 0);
    assert!(
        m.tick().is_empty(),
        "no alert on data like the training data"
    );
    let doc = m.document();
    assert_eq!(doc.status, "ok");
    assert_eq!(doc.window_rows, 2_000);
    for f in &doc.features {
        assert_eq!(
            f.drift.state,
            Some(DriftState::Stable),
            "{}: {}",
            f.drift.name,
            f.drift.psi
        );
    }
    assert!(doc.score.is_some());
}

#[test]
fn a_shifted_feature_raises_one_drift_alert_until_it_comes_back() {
    let (model, x, scores) = model_and_rows(2_000, 3.0);
    let m = Monitor::new(config());
    m.observe(&model, &x, &scores, 0);
    let alerts = m.tick();
    let v4: Vec<&MonitoringAlert> = alerts
        .iter()
        .filter(|a| a.variable.as_deref() == Some("V4"))
        .collect();
    assert_eq!(v4.len(), 1, "{alerts:?}");
    assert_eq!(v4[0].kind, "drift");
    assert!(v4[0].value >= 0.25);
    assert!(
        !alerts.iter().any(|a| a.variable.as_deref() == Some("V1")),
        "an unshifted feature stays quiet: {alerts:?}"
    );
    assert!(m.tick().is_empty(), "once while it stays up");
    let doc = m.document();
    assert_eq!(doc.top[0], "V4");
    assert!(doc.alerts.iter().any(|a| a.key == v4[0].key));

    // Back to normal (the window fills with unshifted rows), then shifted again: a new
    // alert with a new key.
    let (_, normal, normal_scores) = model_and_rows(2_000, 0.0);
    m.observe(&model, &normal, &normal_scores, 0);
    m.observe(&model, &normal, &normal_scores, 0);
    assert!(m.tick().iter().all(|a| a.variable.as_deref() != Some("V4")));
    std::thread::sleep(Duration::from_millis(5));
    m.observe(&model, &x, &scores, 0);
    m.observe(&model, &x, &scores, 0);
    let again = m.tick();
    let key = again
        .iter()
        .find(|a| a.variable.as_deref() == Some("V4"))
        .map(|a| a.key.clone());
    assert!(key.is_some_and(|k| k != v4[0].key), "{again:?}");
}

#[test]
fn alert_after_holds_the_alert_and_a_model_without_reference_is_reported() {
    let (model, x, scores) = model_and_rows(2_000, 3.0);
    let m = Monitor::new(MonitoringConfig {
        alert_after: Duration::from_secs(3600),
        ..config()
    });
    m.observe(&model, &x, &scores, 0);
    assert!(m.tick().is_empty(), "not for an hour");
    assert!(
        m.document()
            .features
            .iter()
            .any(|f| f.above_band_since_ms.is_some())
    );

    let bare = Model::from_bytes(&model.to_bytes()).unwrap();
    assert!(
        bare.reference().is_none(),
        "the model file does not carry it"
    );
    let m = Monitor::new(config());
    m.observe(&bare, &x, &scores, 0);
    let doc = m.document();
    assert_eq!(doc.status, "no_reference");
    assert!(doc.features.is_empty());
}

/// Labels joined with their verdicts by the velocity stage reach the quality figures of
/// the version that served them, whichever came first.
#[test]
fn labels_joined_with_verdicts_give_quality_per_version() {
    use crate::model::Verdict;
    use crate::velocity::LabelEvent;
    use crate::velocity::config::VelocityConfig;
    use crate::velocity::stage::Velocity;

    let m = Arc::new(Monitor::new(config()));
    let velocity = Velocity::from_config(&VelocityConfig {
        enabled: true,
        ..VelocityConfig::default()
    })
    .unwrap()
    .unwrap();
    velocity.set_monitor(m.clone());
    let label = |i: usize, fraud: bool| LabelEvent {
        tx_id: format!("t{i}"),
        time: 0.0,
        label: u8::from(fraud),
        card_id: Some("c".into()),
        terminal_id: None,
    };
    // One label comes before its verdict.
    velocity.apply_labels(&[label(0, true)]).unwrap();
    let verdicts: Vec<Verdict> = (0..4)
        .map(|i| Verdict::by_model(&format!("t{i}"), [0.9, 0.8, 0.2, 0.1][i], 0.5, "v7", vec![]))
        .collect();
    velocity.record_verdicts(&verdicts);
    // t1 flagged but legitimate, t2 passed but fraud; t3 stays unlabelled.
    velocity
        .apply_labels(&[label(1, false), label(2, true)])
        .unwrap();
    let doc = m.document();
    let q = &doc.quality[0];
    assert_eq!(q.version, "v7");
    assert_eq!(q.labelled, 3);
    assert_eq!(q.precision, Some(0.5));
    assert_eq!(q.recall, Some(0.5));
    assert!(q.newest_label_ms.is_some());
}
