//! Event time: rows out of range count in no entity, on either store path, and every
//! other row keeps the offline reference's features.

use super::*;

/// A clean stream: `n` rows in time order, gaps of up to 20 minutes (some longer than
/// the skew), 20 cards and 8 terminals.
fn clean_stream(rng: &mut Rng, n: usize) -> Vec<Transaction> {
    let mut time = START;
    (0..n)
        .map(|i| {
            time += rng.below(1_200) as f64;
            tx(
                &format!("tx{i}"),
                time,
                (rng.below(20_000) as f64) / 100.0,
                &format!("c{}", rng.below(20)),
                &format!("t{}", rng.below(8)),
            )
        })
        .collect()
}

/// Times that must count in no entity: beyond the wall clock (milliseconds sent as
/// seconds, 1e300), behind the watermark (a year back, -1e300), and far ahead of the
/// stream while still before the wall clock (which only the stream can refuse).
fn poison_time(rng: &mut Rng) -> f64 {
    match rng.below(6) {
        0 => START * 1_000.0,
        1 => 1e300,
        2 => -1e300,
        3 => START - 365.0 * DAY,
        4 => 0.0,
        _ => START + (100 + rng.below(100)) as f64 * DAY,
    }
}

/// `clean` with `poisons` inserted at random places (never two in a row), each on a
/// card and terminal the stream uses.
fn poisoned(rng: &mut Rng, clean: &[Transaction], poisons: usize) -> Vec<Transaction> {
    let mut at: Vec<usize> = (0..poisons).map(|_| rng.below(clean.len())).collect();
    at.sort_unstable();
    at.dedup();
    let mut out = Vec::with_capacity(clean.len() + at.len());
    for (i, t) in clean.iter().enumerate() {
        // The first five records set the first watermark at their median: at most
        // two of them are wrong here.
        if i >= 3 && at.binary_search(&i).is_ok() {
            let mut p = clean[rng.below(clean.len())].clone();
            p.id = format!("poison{i}");
            p.values[TIME] = poison_time(rng);
            out.push(p);
        }
        out.push(t.clone());
    }
    out
}

/// Run `rows` through `engine` in random batches; the features by id.
fn run_batches<S: StateStore>(
    engine: &mut Engine<S>,
    rng: &mut Rng,
    rows: &[Transaction],
) -> (FastMap<String, Vec<f32>>, Vec<BatchReport>) {
    let (mut features, mut reports) = (FastMap::default(), Vec::new());
    let mut i = 0;
    while i < rows.len() {
        let end = (i + 1 + rng.below(40)).min(rows.len());
        let mut batch = rows[i..end].to_vec();
        reports.push(engine.process(&mut batch).unwrap());
        for t in batch {
            features.insert(t.id, t.derived);
        }
        i = end;
    }
    (features, reports)
}

/// The offline reference over the clean rows against `rows` run online: every clean
/// row has the reference's features, no poisoned row counts, and the watermark is a
/// clean row's time.
fn check_against_reference<S: StateStore>(mut online: Engine<S>, seed: u64, poisons: usize) {
    let mut rng = Rng::new(seed);
    let clean = clean_stream(&mut rng, 300);
    let rows = poisoned(&mut rng, &clean, poisons);
    let mut reference = clean.clone();
    compute_offline(&mut offline_engine(spec()).unwrap(), &mut reference).unwrap();
    let (features, reports) = run_batches(&mut online, &mut rng, &rows);
    for r in &reference {
        if features[&r.id] != r.derived {
            for t in rows.iter().take(8) {
                eprintln!(
                    "{} {} {:?} {:?} {:?}",
                    t.id,
                    t.time() - START,
                    t.card_id,
                    t.terminal_id,
                    features[&t.id]
                );
            }
            for r in reports.iter().take(3) {
                eprintln!("{r:?}");
            }
            eprintln!("ref {:?}", r.derived);
        }
        assert_eq!(features[&r.id], r.derived, "seed {seed}: {}", r.id);
    }
    let refused: std::collections::HashSet<&str> = reports
        .iter()
        .flat_map(|r| r.out_of_range.iter().map(|o| o.tx_id.as_str()))
        .collect();
    for p in rows.iter().filter(|t| t.id.starts_with("poison")) {
        let last = rows.last().is_some_and(|l| l.id == p.id);
        assert!(
            refused.contains(p.id.as_str()) || last,
            "seed {seed}: {} (Time {}) counted",
            p.id,
            p.time()
        );
    }
    let w = online.watermark().unwrap();
    assert!(
        clean.iter().any(|t| t.time() == w),
        "seed {seed}: the watermark {w} is no clean row's time"
    );
}

#[test]
fn out_of_range_times_count_in_no_entity_on_either_path() {
    // 384248 with 34 poisons: a far-past record before any watermark once took back
    // the first row it disagreed with.
    for (seed, poisons) in [(384_248, 34), (285_779, 25), (330_667, 30), (972_962, 36)]
        .into_iter()
        .chain((0..24).map(|s| (s, 12)))
    {
        check_against_reference(Engine::new(spec(), store()).unwrap(), seed, poisons);
        check_against_reference(Engine::new(spec(), Opaque(store())).unwrap(), seed, poisons);
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
    /// Random interleavings of out-of-range times into a clean stream, in random
    /// batches, on both store paths: every in-range row gets the offline reference's
    /// features.
    #[test]
    fn random_interleavings_keep_the_reference_features(seed in 0u64..1_000_000, poisons in 1usize..40) {
        check_against_reference(Engine::new(spec(), store()).unwrap(), seed, poisons);
        check_against_reference(Engine::new(spec(), Opaque(store())).unwrap(), seed, poisons);
    }
}

/// The reproduction of issue 22: one transaction with `Time` in milliseconds in the
/// middle of the stream once moved the store's clock, so every later row read as
/// older than the horizon and every card count fell to 1.
#[test]
fn a_far_future_row_does_not_move_the_clock() {
    for memory in [true, false] {
        let mut rng = Rng::new(5);
        let clean = clean_stream(&mut rng, 400);
        let mut rows = clean.clone();
        let mut ms = clean[200].clone();
        ms.id = "ms".into();
        ms.values[TIME] *= 1_000.0;
        rows.insert(200, ms);
        let mut reference = clean.clone();
        compute_offline(&mut offline_engine(spec()).unwrap(), &mut reference).unwrap();
        let (features, reports) = if memory {
            run_batches(&mut Engine::new(spec(), store()).unwrap(), &mut rng, &rows)
        } else {
            run_batches(
                &mut Engine::new(spec(), Opaque(store())).unwrap(),
                &mut rng,
                &rows,
            )
        };
        for r in &reference {
            assert_eq!(features[&r.id], r.derived, "{}", r.id);
        }
        let counts: Vec<f32> = reference[200..].iter().map(|r| r.derived[0]).collect();
        assert!(
            counts.iter().any(|&c| c > 1.0),
            "card counts above 1 after the row"
        );
        let out: Vec<&OutOfRange> = reports.iter().flat_map(|r| &r.out_of_range).collect();
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].tx_id.as_str(), out[0].side), ("ms", Side::Ahead));
        assert!(out[0].row.is_some(), "refused in its own batch");
    }
}

/// Five rows of card `c` a minute apart from `START`: the first watermark is set at
/// their median, then every one of them counts for good.
fn warm_up<S: StateStore>(e: &mut Engine<S>) {
    let mut b: Vec<Transaction> = (0..5)
        .map(|i| tx(&format!("w{i}"), START + 60.0 * f64::from(i), 1.0, "c", "t"))
        .collect();
    e.process(&mut b).unwrap();
    let mut next = vec![tx("w5", START + 300.0, 1.0, "c", "t")];
    e.process(&mut next).unwrap();
    assert_eq!(e.watermark(), Some(START + 300.0));
}

#[test]
fn a_row_far_ahead_of_the_stream_is_held_then_taken_back() {
    let mut e = Engine::new(spec(), store()).unwrap();
    warm_up(&mut e);
    let mut ahead = vec![tx("p", START + 90.0 * DAY, 1.0, "c", "t")];
    let r = e.process(&mut ahead).unwrap();
    assert_eq!(r.held, vec![0]);
    assert_eq!(e.watermark(), Some(START + 300.0), "holding moves nothing");
    let mut next = vec![tx("n", START + 360.0, 1.0, "c", "t")];
    let r = e.process(&mut next).unwrap();
    assert_eq!(
        r.out_of_range,
        vec![OutOfRange {
            tx_id: "p".into(),
            row: None,
            side: Side::Ahead
        }]
    );
    assert_eq!(feature(&e, &next[0], "card_id_count_1d"), 6.0);
    // Taken back whole: its features are forgotten, its bucket gone.
    let mem = e.store.as_memory().unwrap();
    assert!(mem.served_features("p").is_none());
    let buckets = mem.peek((Entity::CardId, "c"));
    assert_eq!(buckets.len(), 1, "{buckets:?}");
    assert_eq!(buckets[0].count, 7);
}

#[test]
fn after_a_quiet_spell_rows_count_as_they_come_and_the_clock_follows() {
    let mut e = Engine::new(spec(), Opaque(store())).unwrap();
    warm_up(&mut e);
    let quiet = START + 3.0 * 3_600.0;
    let mut gap = vec![tx("g", quiet, 1.0, "c", "t")];
    assert_eq!(e.process(&mut gap).unwrap().held, vec![0]);
    let mut after = vec![tx("h", quiet + 30.0, 1.0, "c", "t")];
    let r = e.process(&mut after).unwrap();
    assert!(r.confirmed.is_empty(), "one follower is not enough");
    assert_eq!(feature(&e, &after[0], "card_id_count_1d"), 7.0, "g counts");
    let mut more = vec![tx("i", quiet + 60.0, 1.0, "c", "t")];
    let r = e.process(&mut more).unwrap();
    assert_eq!(r.confirmed, vec!["g".to_owned(), "h".to_owned()]);
    assert!(r.out_of_range.is_empty());
    assert_eq!(feature(&e, &more[0], "card_id_count_1d"), 8.0);
    assert_eq!(e.watermark(), Some(quiet + 60.0));
}

#[test]
fn labels_out_of_range_are_not_applied() {
    let mut e = Engine::new(spec(), store()).unwrap();
    warm_up(&mut e);
    let label = |id: &str, time: f64| LabelEvent {
        tx_id: id.into(),
        time,
        label: 1,
        card_id: Some("c".into()),
        terminal_id: Some("t".into()),
    };
    let applied = e
        .label(&[
            label("old", START - 365.0 * DAY),
            label("inf", -1e300),
            label("ms", START * 1_000.0),
            label("w0", START),
        ])
        .unwrap();
    assert_eq!(applied, 1);
    assert_eq!(e.labels_refused(), (1, 2));
}
