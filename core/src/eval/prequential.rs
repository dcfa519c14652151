//! The handbook's evaluation protocol for fraud detection with delayed labels (Le Borgne
//! et al., "Reproducible Machine Learning for Credit Card Fraud Detection", chapters
//! 3.4 and 4.3): train on `train_days` days, skip `delay_days` (their labels are not
//! known yet when the model goes live), test on the next `test_days` days; a test day
//! leaves out the cards already known to be compromised (a fraud during training, or
//! in the delay period up to the day before); and rank cards, not transactions, for
//! card precision@k.

use std::collections::HashSet;

/// What the protocol needs of each row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    /// Day index (any origin; only differences matter).
    pub day: i64,
    /// Card (customer) index.
    pub card: u32,
    /// 1 for fraud.
    pub label: u8,
}

/// The periods, in days from `start` (the first training day).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Periods {
    /// First training day.
    pub start: i64,
    /// Training days.
    pub train_days: i64,
    /// Days skipped between training and test.
    pub delay_days: i64,
    /// Test days.
    pub test_days: i64,
}

/// Training rows and test rows (indices, ascending), per the protocol.
#[must_use]
pub fn split(rows: &[Row], p: Periods) -> (Vec<usize>, Vec<usize>) {
    let train_end = p.start + p.train_days;
    let train: Vec<usize> = (0..rows.len())
        .filter(|&i| (p.start..train_end).contains(&rows[i].day))
        .collect();
    let mut known: HashSet<u32> = train
        .iter()
        .filter(|&&i| rows[i].label == 1)
        .map(|&i| rows[i].card)
        .collect();
    let mut test = Vec::new();
    for d in 0..p.test_days {
        // The frauds of the day before this test day's delay-shifted twin become known.
        let newly = train_end + d - 1;
        known.extend(
            rows.iter()
                .filter(|r| r.day == newly && r.label == 1)
                .map(|r| r.card),
        );
        let day = train_end + p.delay_days + d;
        test.extend(
            (0..rows.len()).filter(|&i| rows[i].day == day && !known.contains(&rows[i].card)),
        );
    }
    test.sort_unstable();
    (train, test)
}

/// Card precision@k: per day, each card's highest score and whether it had a fraud
/// that day; the share of compromised cards among the `k` highest; averaged over the
/// days. A card detected on one day leaves the ranking of the following days.
#[must_use]
pub fn card_precision_at_k(rows: &[Row], scores: &[f32], k: usize) -> f64 {
    assert_eq!(rows.len(), scores.len(), "one score per row");
    let mut days: Vec<i64> = rows.iter().map(|r| r.day).collect();
    days.sort_unstable();
    days.dedup();
    let mut detected: HashSet<u32> = HashSet::new();
    let mut per_day = Vec::with_capacity(days.len());
    for day in days {
        let mut cards: std::collections::HashMap<u32, (f32, u8)> = Default::default();
        for (r, &s) in rows.iter().zip(scores) {
            if r.day != day || detected.contains(&r.card) {
                continue;
            }
            let e = cards.entry(r.card).or_insert((f32::NEG_INFINITY, 0));
            e.0 = e.0.max(s);
            e.1 = e.1.max(r.label);
        }
        let mut ranked: Vec<(u32, f32, u8)> =
            cards.into_iter().map(|(c, (s, l))| (c, s, l)).collect();
        // Highest score first; ties by card for a deterministic order.
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let top = &ranked[..k.min(ranked.len())];
        let hits = top.iter().filter(|c| c.2 == 1).count();
        per_day.push(hits as f64 / k as f64);
        detected.extend(top.iter().filter(|c| c.2 == 1).map(|c| c.0));
    }
    if per_day.is_empty() {
        0.0
    } else {
        per_day.iter().sum::<f64>() / per_day.len() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(day: i64, card: u32, label: u8) -> Row {
        Row { day, card, label }
    }

    #[test]
    fn split_skips_the_delay_and_known_cards() {
        let rows = vec![
            row(0, 1, 1), // card 1 defrauded in training
            row(0, 2, 0),
            row(1, 3, 1), // card 3 defrauded on the last training day
            row(2, 4, 1), // delay period: card 4 becomes known before test day 1
            row(3, 1, 0), // test day 0: card 1 known
            row(3, 2, 0),
            row(3, 4, 1), // card 4 not known yet on test day 0
            row(4, 4, 0), // test day 1: card 4 known
            row(4, 5, 0),
            row(5, 5, 0), // after the test period
        ];
        let p = Periods {
            start: 0,
            train_days: 2,
            delay_days: 1,
            test_days: 2,
        };
        let (train, test) = split(&rows, p);
        assert_eq!(train, vec![0, 1, 2]);
        assert_eq!(test, vec![5, 6, 8]);
    }

    #[test]
    fn card_precision_ranks_cards_per_day() {
        // Day 0: cards 1 (fraud, 0.9), 2 (legit, 0.8), 3 (fraud, 0.1); top 2 → 1 of 2.
        // Day 1: card 1 was detected and leaves; 3 (fraud, 0.7), 2 (0.2) → 1 of 2.
        let rows = vec![
            row(0, 1, 1),
            row(0, 1, 0),
            row(0, 2, 0),
            row(0, 3, 1),
            row(1, 1, 1),
            row(1, 3, 1),
            row(1, 2, 0),
        ];
        let scores = [0.9, 0.2, 0.8, 0.1, 0.99, 0.7, 0.2];
        assert!((card_precision_at_k(&rows, &scores, 2) - 0.5).abs() < 1e-12);
        assert!((card_precision_at_k(&rows, &scores, 1) - 1.0).abs() < 1e-12);
    }
}
