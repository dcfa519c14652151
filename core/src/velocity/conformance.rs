//! The conformance suite every [`StateStore`] passes: run it from a backend's tests with
//! a function that makes an empty store (a fresh namespace for a shared one).

use super::spec::Entity;
use super::store::{Commit, Key, Label, StateStore};

const CARD: Key<'static> = (Entity::CardId, "card-1");
const TERMINAL: Key<'static> = (Entity::TerminalId, "term-1");

/// Run every check against stores made by `make`.
///
/// # Panics
/// On the first check a store fails, naming it.
pub fn run<S: StateStore>(mut make: impl FnMut() -> S) {
    unknown_entities_are_empty(&mut make());
    commits_add_to_their_buckets(&mut make());
    a_transaction_counts_once(&mut make());
    labels_count_once(&mut make());
    since_filters_old_buckets(&mut make());
    labels_do_not_move_the_clock(&mut make());
    uncount_takes_a_transaction_back_whole(&mut make());
    expiry_keeps_what_is_still_read(&mut make());
}

fn commit<S: StateStore>(s: &mut S, id: &str, keys: &[Key<'_>], bucket: i64, amount: f64) {
    let features = [bucket as f32, amount as f32];
    s.commit(&[Commit {
        tx_id: id,
        features: &features,
        keys,
        bucket,
        amount,
    }])
    .expect("commit");
}

fn unknown_entities_are_empty<S: StateStore>(s: &mut S) {
    let b = s.buckets(&[CARD, TERMINAL], 0).expect("buckets");
    assert_eq!(b, vec![vec![], vec![]], "unknown entities have no buckets");
    assert_eq!(s.served(&["nope"]).expect("served"), vec![None]);
}

fn commits_add_to_their_buckets<S: StateStore>(s: &mut S) {
    commit(s, "a", &[CARD, TERMINAL], 100, 10.0);
    commit(s, "b", &[CARD], 100, 5.5);
    commit(s, "c", &[CARD], 98, 1.0);
    let b = s.buckets(&[CARD, TERMINAL], 0).expect("buckets");
    let card: Vec<(i64, u32, f64)> = b[0].iter().map(|x| (x.idx, x.count, x.sum)).collect();
    assert_eq!(
        card,
        vec![(98, 1, 1.0), (100, 2, 15.5)],
        "card buckets, ascending"
    );
    let term: Vec<(i64, u32, f64)> = b[1].iter().map(|x| (x.idx, x.count, x.sum)).collect();
    assert_eq!(term, vec![(100, 1, 10.0)], "terminal bucket");
    let served = s.served(&["b", "x"]).expect("served");
    assert_eq!(
        served,
        vec![Some(vec![100.0, 5.5]), None],
        "features recorded per id"
    );
}

fn a_transaction_counts_once<S: StateStore>(s: &mut S) {
    commit(s, "a", &[CARD], 7, 3.0);
    commit(s, "a", &[CARD], 7, 3.0);
    // The same id in one call, too.
    let f = [1.0f32];
    let c = Commit {
        tx_id: "b",
        features: &f,
        keys: &[CARD],
        bucket: 7,
        amount: 2.0,
    };
    s.commit(&[c, c]).expect("commit");
    let b = s.buckets(&[CARD], 0).expect("buckets");
    assert_eq!(b[0].len(), 1);
    assert_eq!(
        (b[0][0].count, b[0][0].sum),
        (2, 5.0),
        "each id counted once"
    );
}

fn labels_count_once<S: StateStore>(s: &mut S) {
    commit(s, "a", &[TERMINAL], 50, 1.0);
    let l = Label {
        tx_id: "a",
        keys: &[TERMINAL],
        bucket: 50,
    };
    assert_eq!(s.label(&[l]).expect("label"), 1, "a new label applies");
    assert_eq!(
        s.label(&[l, l]).expect("label"),
        0,
        "a repeated label does not"
    );
    let b = s.buckets(&[TERMINAL], 0).expect("buckets");
    assert_eq!((b[0][0].count, b[0][0].frauds), (1, 1));
}

fn since_filters_old_buckets<S: StateStore>(s: &mut S) {
    for (i, bucket) in [10, 20, 30].into_iter().enumerate() {
        commit(s, &format!("t{i}"), &[CARD], bucket, 1.0);
    }
    let b = s.buckets(&[CARD], 20).expect("buckets");
    let idx: Vec<i64> = b[0].iter().map(|x| x.idx).collect();
    assert_eq!(idx, vec![20, 30], "buckets before `since` are left out");
}

fn labels_do_not_move_the_clock<S: StateStore>(s: &mut S) {
    // A replayed labels feed can hold labels of transactions far ahead of the stream.
    let future = Label {
        tx_id: "later",
        keys: &[TERMINAL],
        bucket: 50_000_000,
    };
    s.label(&[future]).expect("label");
    commit(s, "a", &[CARD, TERMINAL], 10, 1.0);
    commit(s, "b", &[CARD], 11, 1.0);
    let b = s.buckets(&[CARD], 0).expect("buckets");
    let idx: Vec<i64> = b[0].iter().map(|x| x.idx).collect();
    assert_eq!(
        idx,
        vec![10, 11],
        "counters are kept despite a label from the future"
    );
}

fn uncount_takes_a_transaction_back_whole<S: StateStore>(s: &mut S) {
    commit(s, "keep", &[CARD], 10, 2.0);
    commit(s, "p", &[CARD, TERMINAL], 500, 7.0);
    commit(s, "q", &[CARD], 10, 3.0);
    let back = |id: &'static str, keys: &'static [Key<'static>], bucket: i64, amount: f64| Commit {
        tx_id: id,
        features: &[],
        keys,
        bucket,
        amount,
    };
    let p = back("p", &[CARD, TERMINAL], 500, 7.0);
    let q = back("q", &[CARD], 10, 3.0);
    assert_eq!(s.uncount(&[p, q]).expect("uncount"), 2);
    assert_eq!(
        s.uncount(&[p]).expect("uncount"),
        0,
        "a second time changes nothing"
    );
    assert_eq!(
        s.uncount(&[back("never", &[CARD], 10, 1.0)])
            .expect("uncount"),
        0,
        "nothing recorded, nothing taken"
    );
    let b = s.buckets(&[CARD, TERMINAL], 0).expect("buckets");
    let card: Vec<(i64, u32, f64)> = b[0].iter().map(|x| (x.idx, x.count, x.sum)).collect();
    assert_eq!(
        card,
        vec![(10, 1, 2.0)],
        "the emptied bucket is gone, the shared one exact"
    );
    assert!(b[1].is_empty(), "the terminal's only bucket is gone");
    let served = s.served(&["p", "keep"]).expect("served");
    assert!(served[0].is_none(), "its features are forgotten");
    assert!(served[1].is_some());
    // Taken back, it may count again (a redelivery judged again).
    commit(s, "p", &[CARD], 500, 7.0);
    assert_eq!(s.buckets(&[CARD], 400).expect("buckets")[0].len(), 1);
}

fn expiry_keeps_what_is_still_read<S: StateStore>(s: &mut S) {
    commit(s, "a", &[CARD], 10, 1.0);
    commit(s, "b", &[CARD], 20, 1.0);
    s.expire_before(15);
    commit(s, "c", &[CARD], 30, 1.0);
    let b = s.buckets(&[CARD], 15).expect("buckets");
    let idx: Vec<i64> = b[0].iter().map(|x| x.idx).collect();
    assert_eq!(idx, vec![20, 30], "buckets from the cut on are kept");
}
