//! Event time: which transactions count in entity state, and the watermark that decides
//! it, which no single record can move.
//!
//! The watermark `W` is the newest event time counted for good. A transaction at `t`:
//! - more than `max_future_skew` after the wall clock (when the policy reads it) is
//!   *beyond*: it can never be right (milliseconds sent as seconds, `1e300`), and counts
//!   in no entity;
//! - older than `W − reach − allowed_lateness` (`reach`: how far back any feature reads,
//!   the spec's horizon) is *behind*, and counts in no entity;
//! - no more than `max_future_skew` after `W` counts, and moves `W` to `t` if later;
//! - further ahead, or any transaction before `W` exists, is *held*: counted at once, so
//!   every reader sees it, but provisionally, and `W` stays. Later records near the
//!   stream's front judge it: one no earlier than `t − max_future_skew` and within
//!   `reach + allowed_lateness` after it *follows* it, and once two have, it counts for
//!   good and `W` moves to `t`; one earlier than `t − reach − allowed_lateness`
//!   *contradicts* it (no window of the stream's front reads that far ahead): it is
//!   taken back, counts and recorded features, and counts in no entity. Anything else
//!   says nothing (partitions minutes or hours apart look like that). A held
//!   transaction that falls inside the range as `W` moves counts for good; one that `W`
//!   leaves behind is taken back. Before any `W`, every transaction is held, and the first `W` is the
//!   median time of the first five records, so that two wrong times among them cannot
//!   set it.
//!
//! So a transaction after a quiet spell, or from a partition ahead of the others, counts
//! as it always did (everyone's features are what they would be without the rule),
//! while a lone far-future one is taken back at the next record and moves nothing; while
//! held it sits in a bucket no earlier transaction reads. A record is "near the front" when it is later than
//! `W − max_future_skew`: a lagging partition's records say nothing about the front.
//! Labels never move the clock; a label behind `W − reach − allowed_lateness`, or beyond
//! the wall clock, is not applied (a label may come before its transaction, so being
//! ahead of `W` is no reason). All arithmetic on times saturates.

/// The limits of event time (`velocity.max_future_skew`, `velocity.allowed_lateness`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EventTimePolicy {
    /// How far ahead of the watermark (and of the wall clock) a transaction may be and
    /// still count at once, in seconds.
    pub max_future_skew: f64,
    /// How much older than the longest reach of the features a transaction may be and
    /// still count, in seconds.
    pub allowed_lateness: f64,
    /// Refuse transactions beyond the wall clock plus the skew (online); offline
    /// histories are judged by their own times only.
    pub wall_clock: bool,
}

impl EventTimePolicy {
    /// The online defaults: 5 minutes of skew, 1 hour of lateness, the wall clock read.
    pub const ONLINE: Self = Self {
        max_future_skew: 300.0,
        allowed_lateness: 3_600.0,
        wall_clock: true,
    };

    /// Offline histories, read in time order: every transaction counts at once (nothing
    /// is ahead, and nothing in order is behind), and what the features no longer read
    /// is dropped.
    pub const OFFLINE: Self = Self {
        max_future_skew: f64::INFINITY,
        allowed_lateness: 0.0,
        wall_clock: false,
    };
}

impl Default for EventTimePolicy {
    fn default() -> Self {
        Self::ONLINE
    }
}

/// Which side of the accepted range a transaction fell on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// After the wall clock plus the skew, or held and never followed.
    Ahead,
    /// Older than the watermark minus the reach and the lateness.
    Behind,
}

impl Side {
    /// The metric label.
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Self::Ahead => "ahead",
            Self::Behind => "behind",
        }
    }
}

/// What happens to a transaction's counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Counted now.
    Count,
    /// Scored now, counted once a later record follows it.
    Hold,
    /// Never counted.
    Refuse(Side),
}

/// What a record near the stream's front says of a held one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judgement {
    /// It is no earlier than the held one's time minus the skew, and within reach and
    /// lateness after it: the stream went on from there.
    Follows,
    /// It is earlier than the held one's time by more than reach and lateness: no window
    /// of the stream's front reaches the held one, which is an outlier.
    Contradicts,
    /// Neither (another partition a little behind, or a record far ahead).
    Undecided,
}

/// The watermark and the policy around it.
#[derive(Debug, Clone)]
pub struct EventClock {
    policy: EventTimePolicy,
    /// Seconds back from a transaction that its features read (the spec's horizon).
    reach: f64,
    watermark: Option<f64>,
}

impl EventClock {
    /// A clock for features reaching `reach` seconds back.
    #[must_use]
    pub fn new(policy: EventTimePolicy, reach: f64) -> Self {
        Self {
            policy,
            reach,
            watermark: None,
        }
    }

    /// The policy.
    #[must_use]
    pub fn policy(&self) -> EventTimePolicy {
        self.policy
    }

    /// The newest event time counted, once one is.
    #[must_use]
    pub fn watermark(&self) -> Option<f64> {
        self.watermark
    }

    /// The wall clock in Unix seconds, when the policy reads it.
    #[must_use]
    pub fn now(&self) -> Option<f64> {
        self.policy.wall_clock.then(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64())
        })
    }

    /// The oldest time that still counts (none before a watermark exists).
    #[must_use]
    pub fn oldest(&self) -> Option<f64> {
        self.watermark
            .map(|w| w - self.reach - self.policy.allowed_lateness)
    }

    fn beyond(&self, t: f64, now: Option<f64>) -> bool {
        !t.is_finite() || now.is_some_and(|n| t > n + self.policy.max_future_skew)
    }

    /// The fate of a transaction at `t`, with the wall clock at `now`.
    #[must_use]
    pub fn fate(&self, t: f64, now: Option<f64>) -> Fate {
        if self.beyond(t, now) {
            return Fate::Refuse(if t < 0.0 { Side::Behind } else { Side::Ahead });
        }
        match self.watermark {
            // Without a skew limit nothing is ahead: nothing needs a follower.
            None if self.policy.max_future_skew.is_infinite() => Fate::Count,
            None => Fate::Hold,
            Some(_) if self.oldest().is_some_and(|o| t < o) => Fate::Refuse(Side::Behind),
            Some(w) if t > w + self.policy.max_future_skew => Fate::Hold,
            Some(_) => Fate::Count,
        }
    }

    /// Whether a record at `t` tells where the stream's front is (judges held ones).
    #[must_use]
    pub fn near_front(&self, t: f64, now: Option<f64>) -> bool {
        !self.beyond(t, now)
            && self
                .watermark
                .is_none_or(|w| t > w - self.policy.max_future_skew)
    }

    /// What a front record at `t` says of a held one at `held`.
    #[must_use]
    pub fn judge(&self, held: f64, t: f64) -> Judgement {
        let span = self.reach + self.policy.allowed_lateness;
        if t >= held - self.policy.max_future_skew && t <= held + span {
            Judgement::Follows
        } else if t < held - span {
            // The held one is further ahead than any window of the front reads: the
            // stream is elsewhere.
            Judgement::Contradicts
        } else {
            // Between: partitions a few minutes or hours apart look like this, so it
            // says nothing; or so far ahead that it may be the outlier itself.
            Judgement::Undecided
        }
    }

    /// A transaction at `t` counted: the watermark moves to it if it is later.
    pub fn counted(&mut self, t: f64) {
        if t.is_finite() {
            self.watermark = Some(self.watermark.map_or(t, |w| w.max(t)));
        }
    }

    /// The fate of a label at `t`: applied unless behind, or beyond the wall clock. A
    /// label may come before its transaction (a replayed feed), so being ahead of the
    /// watermark is no reason to refuse it; it never moves the clock.
    #[must_use]
    pub fn label_fate(&self, t: f64, now: Option<f64>) -> Option<Side> {
        if self.beyond(t, now) {
            Some(if t < 0.0 { Side::Behind } else { Side::Ahead })
        } else if self.oldest().is_some_and(|o| t < o) {
            Some(Side::Behind)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: f64 = 1_800_000_000.0;

    fn clock() -> EventClock {
        EventClock::new(
            EventTimePolicy {
                wall_clock: false,
                ..EventTimePolicy::ONLINE
            },
            86_400.0,
        )
    }

    #[test]
    fn nothing_counts_at_once_before_a_watermark() {
        let c = clock();
        assert_eq!(c.fate(1_000.0, None), Fate::Hold);
        assert!(
            c.near_front(-1e300, None),
            "anything tells the front at first"
        );
    }

    #[test]
    fn the_range_around_the_watermark() {
        let mut c = clock();
        c.counted(100_000.0);
        assert_eq!(c.fate(100_000.0 + 300.0, None), Fate::Count);
        assert_eq!(c.fate(100_000.0 + 301.0, None), Fate::Hold);
        assert_eq!(c.fate(100_000.0 - 86_400.0 - 3_600.0, None), Fate::Count);
        assert_eq!(
            c.fate(100_000.0 - 86_400.0 - 3_601.0, None),
            Fate::Refuse(Side::Behind)
        );
        assert_eq!(c.fate(-1e300, None), Fate::Refuse(Side::Behind));
        assert_eq!(c.fate(f64::NAN, None), Fate::Refuse(Side::Ahead));
        assert_eq!(
            c.fate(1e300, None),
            Fate::Hold,
            "only the wall clock refuses it"
        );
        assert_eq!(c.fate(1e300, Some(NOW)), Fate::Refuse(Side::Ahead));
        assert_eq!(c.fate(NOW * 1_000.0, Some(NOW)), Fate::Refuse(Side::Ahead));
        c.counted(50.0);
        assert_eq!(c.watermark(), Some(100_000.0), "never moves back");
        c.counted(f64::INFINITY);
        assert_eq!(c.watermark(), Some(100_000.0));
    }

    #[test]
    fn a_held_record_is_followed_by_the_stream_or_not() {
        let mut c = clock();
        c.counted(100_000.0);
        let held = 110_000.0;
        assert_eq!(c.judge(held, held - 300.0), Judgement::Follows);
        assert_eq!(
            c.judge(held, held - 301.0),
            Judgement::Undecided,
            "another partition a little behind"
        );
        assert_eq!(
            c.judge(held, held - 86_400.0 - 3_601.0),
            Judgement::Contradicts,
            "the stream is out of reach of it"
        );
        assert_eq!(c.judge(held, held + 86_400.0 + 3_600.0), Judgement::Follows);
        assert_eq!(
            c.judge(held, held + 86_400.0 + 3_601.0),
            Judgement::Undecided,
            "too far ahead to say"
        );
        assert!(c.near_front(100_000.0 - 299.0, None));
        assert!(
            !c.near_front(100_000.0 - 301.0, None),
            "a lagging partition"
        );
    }

    #[test]
    fn labels_are_refused_only_behind_or_beyond_the_wall_clock() {
        let mut c = clock();
        assert_eq!(c.label_fate(5.0, Some(NOW)), None, "no watermark yet");
        c.counted(100_000.0);
        assert_eq!(c.label_fate(-1e300, Some(NOW)), Some(Side::Behind));
        assert_eq!(c.label_fate(1e9, Some(NOW)), None, "ahead of the stream");
        assert_eq!(c.label_fate(NOW + 301.0, Some(NOW)), Some(Side::Ahead));
        assert_eq!(c.label_fate(0.0, Some(NOW)), Some(Side::Behind));
    }
}
