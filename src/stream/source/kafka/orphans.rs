//! Partitions the group assigned to no one. A broker can leave a group "stable" with some
//! partitions of its topics in no member's assignment: noida-db does after a freeze past
//! the session timeout (its members rejoin, one gets an empty assignment, and no
//! rebalance follows, since static members rejoining with the same identity get their
//! cached assignment back). Those partitions are then read by no one, for good.
//!
//! Each consumer session checks the group as the broker describes it (DescribeGroups,
//! the members' assignments) against the topics' partitions. A partition missing from
//! every assignment on two checks in a row (the group stable both times) makes it kick
//! the group: a consumer without a static identity joins (which makes the broker
//! rebalance, and drops members that do not rejoin) and leaves at once, reading and
//! committing nothing. `scripts/kafka-orphans-probe.py BROKERS` shows the state and the
//! kick on a broker.

use std::collections::BTreeSet;
use std::sync::Weak;
use std::time::{Duration, Instant};

use rdkafka::config::FromClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::error::KafkaResult;
use tokio_util::sync::CancellationToken;

use super::rebalance::DetectorContext;
use crate::kafka::KafkaSettings;
use crate::metric_names as names;

/// How often the group is checked.
const CHECK_EVERY: Duration = Duration::from_secs(20);
/// Longest wait for the broker's answers.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Longest the kicking consumer waits to be assigned before it leaves.
const KICK_WAIT: Duration = Duration::from_secs(30);

/// A partition: topic and number.
pub type Partition = (String, i32);

/// Check the group every [`CHECK_EVERY`] until `stop`; kick it when the same partitions
/// are orphaned on two checks in a row.
pub(super) async fn watch(
    consumer: Weak<StreamConsumer<DetectorContext>>,
    settings: KafkaSettings,
    stop: CancellationToken,
) {
    let mut pending: Option<Vec<Partition>> = None;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(CHECK_EVERY) => {}
        }
        let Some(c) = consumer.upgrade() else { return };
        let s = settings.clone();
        let orphans = match tokio::task::spawn_blocking(move || orphaned(c.as_ref(), &s)).await {
            Ok(Ok(o)) => o,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "kafka: the group's assignments could not be read");
                continue;
            }
            Err(_) => continue,
        };
        metrics::gauge!(names::KAFKA_ORPHANED_PARTITIONS).set(orphans.len() as f64);
        if orphans.is_empty() {
            pending = None;
            continue;
        }
        if pending.as_ref() != Some(&orphans) {
            tracing::warn!(partitions = ?orphans, "kafka: the broker assigns these partitions to no member of the group; checking again");
            pending = Some(orphans);
            continue;
        }
        tracing::error!(partitions = ?orphans, "kafka: partitions assigned to no member of the group on two checks in a row (the broker kept a stale assignment): making the group rebalance");
        let s = settings.clone();
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || kick(&s)).await {
            tracing::warn!(error = %e, "kafka: the group could not be made to rebalance");
        }
        pending = None;
    }
}

/// The partitions of `settings.topics` in no member's assignment, or none while the
/// group is not stable (a rebalance under way settles it).
pub fn orphaned<X, C>(consumer: &C, settings: &KafkaSettings) -> KafkaResult<Vec<Partition>>
where
    X: rdkafka::consumer::ConsumerContext,
    C: Consumer<X>,
{
    let groups = consumer.fetch_group_list(Some(&settings.group_id), TIMEOUT)?;
    let Some(group) = groups.groups().first() else {
        return Ok(Vec::new());
    };
    if !group.state().eq_ignore_ascii_case("stable") || group.members().is_empty() {
        return Ok(Vec::new());
    }
    let mut held: BTreeSet<Partition> = BTreeSet::new();
    for m in group.members() {
        held.extend(m.assignment().map(parse_assignment).unwrap_or_default());
    }
    let mut orphans = Vec::new();
    for topic in &settings.topics {
        let metadata = consumer.fetch_metadata(Some(topic), TIMEOUT)?;
        for t in metadata.topics() {
            for p in t.partitions() {
                let key = (t.name().to_owned(), p.id());
                if !held.contains(&key) {
                    orphans.push(key);
                }
            }
        }
    }
    Ok(orphans)
}

/// A member's assignment as the consumer protocol encodes it: version (i16), then per
/// topic its name (i16 length, bytes) and partitions (i32 count, i32 each), then user
/// data. What cannot be read is taken as no assignment.
pub fn parse_assignment(bytes: &[u8]) -> Vec<Partition> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if b.len() < n {
            return None;
        }
        let (head, rest) = b.split_at(n);
        *b = rest;
        Some(head)
    }
    fn i16_(b: &mut &[u8]) -> Option<i16> {
        Some(i16::from_be_bytes(take(b, 2)?.try_into().ok()?))
    }
    fn i32_(b: &mut &[u8]) -> Option<i32> {
        Some(i32::from_be_bytes(take(b, 4)?.try_into().ok()?))
    }
    let parse = |mut b: &[u8]| -> Option<Vec<Partition>> {
        let b = &mut b;
        i16_(b)?;
        let topics = i32_(b)?;
        let mut out = Vec::new();
        for _ in 0..topics.max(0) {
            let len = usize::try_from(i16_(b)?).ok()?;
            let name = String::from_utf8(take(b, len)?.to_vec()).ok()?;
            let count = i32_(b)?;
            for _ in 0..count.max(0) {
                out.push((name.clone(), i32_(b)?));
            }
        }
        Some(out)
    };
    parse(bytes).unwrap_or_default()
}

/// Make the broker rebalance the group: a consumer without a static identity joins and
/// leaves. It reads nothing (it is closed once assigned) and commits nothing.
pub fn kick(settings: &KafkaSettings) -> KafkaResult<()> {
    let mut config = settings.consumer_config();
    config
        .remove("group.instance.id")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false");
    let consumer = BaseConsumer::from_config(&config)?;
    let topics: Vec<&str> = settings.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    let deadline = Instant::now() + KICK_WAIT;
    while Instant::now() < deadline {
        // Messages fetched meanwhile are dropped unread: this member only joins.
        let _ = consumer.poll(Duration::from_millis(200));
        if consumer.assignment().is_ok_and(|a| a.count() > 0) {
            break;
        }
    }
    consumer.unsubscribe();
    drop(consumer);
    metrics::counter!(names::KAFKA_GROUP_KICKS).increment(1);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignments_are_read_as_the_consumer_protocol_encodes_them() {
        let mut b = vec![0, 1]; // version
        b.extend(2i32.to_be_bytes());
        for (topic, parts) in [("tx", vec![0i32, 2]), ("t2", vec![5])] {
            b.extend((topic.len() as i16).to_be_bytes());
            b.extend(topic.as_bytes());
            b.extend((parts.len() as i32).to_be_bytes());
            for p in parts {
                b.extend(p.to_be_bytes());
            }
        }
        b.extend((-1i32).to_be_bytes()); // no user data
        assert_eq!(
            parse_assignment(&b),
            vec![("tx".into(), 0), ("tx".into(), 2), ("t2".into(), 5)]
        );
        assert!(parse_assignment(&b[..9]).is_empty(), "cut short: none");
        assert!(parse_assignment(&[]).is_empty());
    }
}
