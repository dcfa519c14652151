//! A transaction simulator with cards, terminals and the three fraud scenarios, written
//! from the published description in "Reproducible Machine Learning for Credit Card
//! Fraud Detection — Practical Handbook" (Le Borgne et al., chapter 3.2):
//!
//! - customers (cards) at a random spot on a 100 × 100 grid, each with a mean amount
//!   drawn from U(5, 100) (standard deviation half of it) and a daily rate from U(0, 4);
//! - terminals at random spots; a customer uses, uniformly, the terminals within
//!   `radius` of home;
//! - every day a customer makes Poisson(rate) transactions, at a time drawn from
//!   N(noon, 20,000 s) (draws outside the day are dropped), of an amount drawn from
//!   N(mean, std) (a negative draw is replaced by U(0, 2 × mean)), rounded to cents;
//! - frauds: (1) every amount over 220; (2) each day two terminals are compromised and
//!   every transaction on them in the next 28 days is fraud; (3) each day three customers
//!   are compromised and a third of their transactions in the next 14 days are frauds
//!   with five times the amount.
//!
//! A drift scenario ([`AmountDrift`]) moves the amounts from a given day on: every
//! customer spends `factor` times as much (a price rise, or a new market in another
//! currency), and the amount scenario's line moves with it (`220 × factor`). A model
//! trained before that day sees shifted `Amount` values and flags ordinary purchases.
//!
//! The handbook draws with NumPy; this draws with our seeded generator, so the data is
//! statistically alike, not identical. Same seed, same data, on every platform.

use fraudstream_core::rng::Rng;
use fraudstream_core::schema::{AMOUNT, NUM_FIELDS, TIME, Transaction};

/// 2018-04-01T00:00:00Z, the handbook's first day.
pub const HANDBOOK_START: i64 = 1_522_540_800;

/// Simulation parameters (the defaults are the handbook's).
#[derive(Debug, Clone, PartialEq)]
pub struct SimParams {
    /// Customers (cards).
    pub customers: u32,
    /// Terminals.
    pub terminals: u32,
    /// Days simulated.
    pub days: u32,
    /// Unix seconds of the first day's midnight (UTC).
    pub start: i64,
    /// Radius within which a customer uses terminals.
    pub radius: f64,
    /// Seed.
    pub seed: u64,
    /// Amounts that move from a day on (none: the handbook's stationary stream).
    pub drift: Option<AmountDrift>,
}

/// From `day` on, every amount is `factor` times what it would have been, and the
/// amount scenario's line is `220 × factor`. Every other draw is the same as without
/// the drift, so the rows before `day` are identical to the stationary simulation's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AmountDrift {
    /// First day (0-based) with moved amounts.
    pub day: u32,
    /// Multiplier of every amount from that day on.
    pub factor: f64,
}

impl AmountDrift {
    /// The factor on `day`.
    #[must_use]
    pub fn factor_on(drift: Option<Self>, day: u32) -> f64 {
        drift.filter(|d| day >= d.day).map_or(1.0, |d| d.factor)
    }
}

impl Default for SimParams {
    fn default() -> Self {
        Self {
            customers: 5_000,
            terminals: 10_000,
            days: 183,
            start: HANDBOOK_START,
            radius: 5.0,
            seed: 0,
            drift: None,
        }
    }
}

/// Why a transaction is a fraud.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Scenario {
    /// Legitimate.
    None = 0,
    /// Amount over 220.
    Amount = 1,
    /// A compromised terminal.
    Terminal = 2,
    /// A compromised customer (amount × 5).
    Customer = 3,
}

/// One simulated transaction, compactly (millions fit in memory).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimTx {
    /// Seconds since the first day's midnight.
    pub seconds: u32,
    /// Customer index.
    pub customer: u32,
    /// Terminal index.
    pub terminal: u32,
    /// Amount.
    pub amount: f64,
    /// Fraud scenario (`None` when legitimate).
    pub scenario: Scenario,
}

impl SimTx {
    /// 1 for fraud.
    #[must_use]
    pub fn label(&self) -> u8 {
        u8::from(self.scenario != Scenario::None)
    }

    /// Day index since the start.
    #[must_use]
    pub fn day(&self) -> u32 {
        self.seconds / 86_400
    }

    /// As a transaction: id `n`, `Time` in Unix seconds, `card_id`, `terminal_id`,
    /// `event_time` (RFC 3339), V1..V28 at 0 (the simulation has no such components),
    /// and the label when `labelled`.
    #[must_use]
    pub fn to_transaction(&self, n: usize, start: i64, labelled: bool) -> Transaction {
        let mut values = [0.0; NUM_FIELDS];
        let unix = start + i64::from(self.seconds);
        values[TIME] = unix as f64;
        values[AMOUNT] = self.amount;
        Transaction {
            id: n.to_string(),
            values,
            label: labelled.then(|| self.label()),
            card_id: Some(self.customer.to_string()),
            terminal_id: Some(self.terminal.to_string()),
            event_time: Some(rfc3339(unix)),
            derived: Vec::new(),
        }
    }
}

/// Unix seconds as `YYYY-MM-DDTHH:MM:SSZ`.
#[must_use]
pub fn rfc3339(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3_600,
        secs % 3_600 / 60,
        secs % 60
    )
}

struct Customer {
    mean_amount: f64,
    std_amount: f64,
    rate: f64,
    terminals: Vec<u32>,
}

/// Simulate, in time order (ties by customer, then draw order).
#[must_use]
pub fn simulate(p: &SimParams) -> Vec<SimTx> {
    let mut rng = Rng::derive(p.seed, 1);
    let homes: Vec<(f64, f64)> = (0..p.customers)
        .map(|_| (rng.unit() * 100.0, rng.unit() * 100.0))
        .collect();
    let mut profiles: Vec<(f64, f64)> = Vec::with_capacity(homes.len());
    for _ in 0..p.customers {
        let mean = 5.0 + rng.unit() * 95.0;
        profiles.push((mean, 4.0 * rng.unit()));
    }
    let mut trng = Rng::derive(p.seed, 2);
    let terminals: Vec<(f64, f64)> = (0..p.terminals)
        .map(|_| (trng.unit() * 100.0, trng.unit() * 100.0))
        .collect();
    let r2 = p.radius * p.radius;
    let customers: Vec<Customer> = homes
        .iter()
        .zip(&profiles)
        .map(|(&(x, y), &(mean, rate))| Customer {
            mean_amount: mean,
            std_amount: mean / 2.0,
            rate,
            terminals: terminals
                .iter()
                .enumerate()
                .filter(|(_, (tx, ty))| (tx - x).powi(2) + (ty - y).powi(2) < r2)
                .map(|(i, _)| i as u32)
                .collect(),
        })
        .collect();

    let mut txs = Vec::new();
    for (c, profile) in customers.iter().enumerate() {
        // One stream per customer, as the handbook seeds per customer.
        let mut rng = Rng::derive(p.seed, 1_000 + c as u64);
        for day in 0..p.days {
            for _ in 0..rng.poisson(profile.rate) {
                let time = (43_200.0 + 20_000.0 * rng.normal()) as i64;
                if time <= 0 || time >= 86_400 {
                    continue;
                }
                let mut amount = profile.mean_amount + profile.std_amount * rng.normal();
                if amount < 0.0 {
                    amount = rng.unit() * profile.mean_amount * 2.0;
                }
                let amount =
                    (amount * AmountDrift::factor_on(p.drift, day) * 100.0).round() / 100.0;
                if profile.terminals.is_empty() {
                    continue;
                }
                let terminal = profile.terminals[rng.below(profile.terminals.len())];
                txs.push(SimTx {
                    seconds: day * 86_400 + time as u32,
                    customer: c as u32,
                    terminal,
                    amount,
                    scenario: Scenario::None,
                });
            }
        }
    }
    txs.sort_by_key(|t| t.seconds);
    add_frauds(&mut txs, p);
    txs
}

/// [`simulate`], as labelled transactions (id = position in time order).
#[must_use]
pub fn simulate_transactions(p: &SimParams) -> Vec<Transaction> {
    simulate(p)
        .iter()
        .enumerate()
        .map(|(n, t)| t.to_transaction(n, p.start, true))
        .collect()
}

fn add_frauds(txs: &mut [SimTx], p: &SimParams) {
    for t in txs.iter_mut() {
        if t.amount > 220.0 * AmountDrift::factor_on(p.drift, t.day()) {
            t.scenario = Scenario::Amount;
        }
    }
    let days = txs.iter().map(SimTx::day).max().unwrap_or(0);
    let mut by_terminal: Vec<Vec<usize>> = vec![Vec::new(); p.terminals as usize];
    let mut by_customer: Vec<Vec<usize>> = vec![Vec::new(); p.customers as usize];
    for (i, t) in txs.iter().enumerate() {
        by_terminal[t.terminal as usize].push(i);
        by_customer[t.customer as usize].push(i);
    }
    let within = |txs: &[SimTx], rows: &[usize], from: u32, days: u32| -> Vec<usize> {
        rows.iter()
            .copied()
            .filter(|&i| (from..from + days).contains(&txs[i].day()))
            .collect()
    };
    for day in 0..days {
        let mut rng = Rng::derive(p.seed, 10_000_000 + u64::from(day));
        for _ in 0..2 {
            let terminal = rng.below(p.terminals as usize);
            for i in within(txs, &by_terminal[terminal], day, 28) {
                txs[i].scenario = Scenario::Terminal;
            }
        }
        let mut chosen: Vec<usize> = Vec::new();
        while chosen.len() < 3.min(p.customers as usize) {
            let c = rng.below(p.customers as usize);
            if !chosen.contains(&c) {
                chosen.push(c);
            }
        }
        let mut rows: Vec<usize> = chosen
            .iter()
            .flat_map(|&c| within(txs, &by_customer[c], day, 14))
            .collect();
        let k = rows.len() / 3;
        rng.shuffle(&mut rows);
        for &i in &rows[..k] {
            txs[i].amount = ((txs[i].amount * 5.0) * 100.0).round() / 100.0;
            txs[i].scenario = Scenario::Customer;
        }
    }
}

/// The label of a simulated transaction, as a labels stream carries it: the
/// transaction's id, event time and entities, and its class.
#[must_use]
pub fn label_json(tx: &Transaction, label: u8) -> String {
    serde_json::json!({
        "id": tx.id,
        "Class": label,
        "Time": tx.time(),
        "card_id": tx.card_id,
        "terminal_id": tx.terminal_id,
        "event_time": tx.event_time,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> SimParams {
        SimParams {
            customers: 1_000,
            terminals: 10_000,
            days: 60,
            ..SimParams::default()
        }
    }

    #[test]
    fn dates_are_rfc3339() {
        assert_eq!(rfc3339(HANDBOOK_START), "2018-04-01T00:00:00Z");
        assert_eq!(
            rfc3339(HANDBOOK_START + 183 * 86_400 - 1),
            "2018-09-30T23:59:59Z"
        );
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn deterministic_and_in_time_order() {
        let a = simulate(&small());
        assert_eq!(a, simulate(&small()));
        assert!(a.windows(2).all(|w| w[0].seconds <= w[1].seconds));
        let other = simulate(&SimParams { seed: 1, ..small() });
        assert_ne!(a, other);
    }

    #[test]
    fn volumes_and_scenarios_follow_the_handbook() {
        let p = small();
        let txs = simulate(&p);
        // About 2 transactions per customer per day (mean rate 2, minus ~3% drawn
        // outside the day).
        let per_day = txs.len() as f64 / f64::from(p.customers * p.days);
        assert!((1.7..2.2).contains(&per_day), "{per_day} per customer-day");
        let share =
            |s: Scenario| txs.iter().filter(|t| t.scenario == s).count() as f64 / txs.len() as f64;
        // The handbook's data: 0.84% of transactions are frauds.
        let fraud = 1.0 - share(Scenario::None);
        assert!((0.004..0.02).contains(&fraud), "fraud rate {fraud}");
        for s in [Scenario::Amount, Scenario::Terminal, Scenario::Customer] {
            assert!(share(s) > 0.0, "{s:?} happens");
        }
        assert!(
            txs.iter()
                .filter(|t| t.scenario == Scenario::Amount)
                .all(|t| t.amount > 220.0)
        );
        // A customer's terminals are near home: few distinct terminals per customer.
        let mut per_customer =
            std::collections::HashMap::<u32, std::collections::HashSet<u32>>::new();
        for t in &txs {
            per_customer
                .entry(t.customer)
                .or_default()
                .insert(t.terminal);
        }
        let mean = per_customer.values().map(|s| s.len()).sum::<usize>() as f64
            / per_customer.len() as f64;
        assert!(mean < 60.0, "{mean} terminals per customer");
    }

    #[test]
    fn amount_drift_moves_amounts_from_its_day_only() {
        let day = 30;
        let drift = AmountDrift { day, factor: 2.0 };
        let (plain, moved) = (
            simulate(&small()),
            simulate(&SimParams {
                drift: Some(drift),
                ..small()
            }),
        );
        assert_eq!(plain.len(), moved.len());
        let before = |txs: &[SimTx]| -> Vec<SimTx> {
            txs.iter().filter(|t| t.day() < day).copied().collect()
        };
        assert_eq!(
            before(&plain),
            before(&moved),
            "rows before the drift differ"
        );
        let mean = |txs: &[SimTx]| {
            let after: Vec<f64> = txs
                .iter()
                .filter(|t| t.day() >= day && t.scenario == Scenario::None)
                .map(|t| t.amount)
                .collect();
            after.iter().sum::<f64>() / after.len() as f64
        };
        let ratio = mean(&moved) / mean(&plain);
        assert!(
            (1.8..2.2).contains(&ratio),
            "legitimate amounts moved {ratio}x"
        );
        // The amount scenario's line moved with the amounts: a comparable fraud rate.
        let rate = |txs: &[SimTx]| {
            let after: Vec<&SimTx> = txs.iter().filter(|t| t.day() >= day).collect();
            after
                .iter()
                .filter(|t| t.scenario == Scenario::Amount)
                .count() as f64
                / after.len() as f64
        };
        assert!(
            rate(&moved) < 2.0 * rate(&plain) + 1e-3,
            "{} vs {}",
            rate(&moved),
            rate(&plain)
        );
        assert!(
            moved
                .iter()
                .filter(|t| t.scenario == Scenario::None)
                .all(|t| t.amount <= 220.0 * AmountDrift::factor_on(Some(drift), t.day()))
        );
    }

    #[test]
    fn transactions_carry_entities_and_time() {
        let t = simulate(&small())[0].to_transaction(0, HANDBOOK_START, false);
        assert!(t.card_id.is_some() && t.terminal_id.is_some());
        assert!(t.label.is_none());
        assert!(t.time() >= HANDBOOK_START as f64);
        assert!(t.event_time.as_deref().unwrap().starts_with("2018-04-01T"));
        let l: serde_json::Value = serde_json::from_str(&label_json(&t, 1)).unwrap();
        assert_eq!(l["Class"], 1);
        assert_eq!(l["id"], "0");
    }
}
