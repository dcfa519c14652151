//! The rule-set and list store's unit tests.
use super::*;
use crate::storage::local::LocalStore;

fn stores(dir: &std::path::Path) -> (Arc<LocalStore>, ModelStore) {
    let blobs = Arc::new(LocalStore::new(dir).unwrap());
    (blobs.clone(), ModelStore::new(blobs))
}

fn catalog(derived: &[&str], lists: &Lists) -> Catalog {
    lists.catalog(derived.iter().map(|s| (*s).to_owned()).collect())
}

#[tokio::test]
async fn with_trusted_keys_only_signed_rule_sets_and_lists_load() {
    let dir = tempfile::tempdir().unwrap();
    let (blobs, models) = stores(dir.path());
    let key = super::super::signing::generate().unwrap();
    let trusted = vec![key.public()];
    let unsigned = models.rules();
    let signer = models
        .clone()
        .with_signer(Some(key))
        .with_trusted_keys(trusted.clone())
        .rules();
    let reader = ModelStore::new(blobs)
        .with_trusted_keys(trusted.clone())
        .rules();
    let empty = Lists::new();

    let a = unsigned
        .publish("rule big: review if Amount > 100\n", &catalog(&[], &empty))
        .await
        .unwrap();
    let e = reader.get(&a.version).await.unwrap_err();
    assert!(
        matches!(e, RulesError::Signature { .. }),
        "an unsigned rule set is refused: {e}"
    );
    let b = signer
        .publish("rule big: block if Amount > 100\n", &catalog(&[], &empty))
        .await
        .unwrap();
    assert_eq!(reader.get(&b.version).await.unwrap().manifest, b);
    assert!(
        reader
            .activate(&a.version, &catalog(&[], &empty))
            .await
            .is_err(),
        "an unsigned version is not activated"
    );
    // Moving ACTIVE needs no key (like LATEST): what it names must be signed.
    reader
        .activate(&b.version, &catalog(&[], &empty))
        .await
        .unwrap();
    // Lists too: one written without the key does not load where keys are trusted.
    unsigned
        .change_list("cards", &["c1".into()], &[])
        .await
        .unwrap();
    assert!(matches!(
        reader.list("cards").await.unwrap_err(),
        RulesError::Signature { .. }
    ));
    // Nor is a change built on it: the unsigned values are not read.
    assert!(matches!(
        signer
            .change_list("cards", &["c2".into()], &[])
            .await
            .unwrap_err(),
        RulesError::Signature { .. }
    ));
}

#[tokio::test]
async fn a_rule_set_is_checked_against_the_features_and_lists_it_names() {
    let dir = tempfile::tempdir().unwrap();
    let (_blobs, models) = stores(dir.path());
    let store = models.rules();
    let empty = Lists::new();
    let text = "rule burst: block if card_id_count_1d > 10 and card_id in @hot\n";
    let e = store
        .publish(text, &catalog(&[], &empty))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("card_id_count_1d"), "{e}");
    store
        .change_list("hot", &["c1".into(), "c2".into()], &[])
        .await
        .unwrap();
    let (lists, versions) = store.load_lists().await.unwrap();
    assert_eq!(versions[0].size, 2);
    let m = store
        .publish(text, &catalog(&["card_id_count_1d"], &lists))
        .await
        .unwrap();
    assert_eq!(m.lists, vec!["hot".to_owned()]);
    assert_eq!(m.derived, vec!["card_id_count_1d".to_owned()]);
    // The same text again: the same version.
    let again = store
        .publish(text, &catalog(&["card_id_count_1d"], &lists))
        .await
        .unwrap();
    assert_eq!(again.version, m.version);
    // A detector computing no entity features refuses to activate it.
    let e = store
        .activate(&m.version, &catalog(&[], &lists))
        .await
        .unwrap_err();
    assert!(matches!(e, RulesError::Compile { .. }), "{e}");
    store
        .activate(&m.version, &catalog(&["card_id_count_1d"], &lists))
        .await
        .unwrap();
    assert_eq!(store.active().await.unwrap().unwrap().version, m.version);
}

#[tokio::test]
async fn concurrent_list_changes_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let (_blobs, models) = stores(dir.path());
    let store = models.rules();
    let mut tasks = Vec::new();
    for i in 0..6 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .change_list("cards", &[format!("c{i}")], &[])
                .await
                .unwrap()
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (v, values) = store.list("cards").await.unwrap();
    assert_eq!(values.len(), 6, "{values:?}");
    assert_eq!(v.size, 6);
    let v = store
        .change_list("cards", &[], &["c3".into()])
        .await
        .unwrap();
    assert_eq!(v.size, 5);
    assert!(matches!(
        check_list_value(" padded"),
        Err(RulesError::Invalid(_))
    ));
    assert!(matches!(
        check_list_name("bad name"),
        Err(RulesError::Invalid(_))
    ));
}
