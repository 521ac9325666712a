//! Reading back, at startup, what the Kafka exporter produced after a saved
//! position (see [`Exporter::recover`](crate::Exporter::recover)); the
//! idempotent producer does not de-duplicate across producer sessions, so a
//! restart after a hard kill would otherwise produce those records again.
//!
//! # The position
//!
//! Per topic partition, the offset after the last record this exporter saw
//! delivered there ([`Offsets`]), seeded with the high watermark of every
//! partition of the fixed topic (by the background broker check, as soon as
//! the topic is seen) and with where the read-back ended. A partition is
//! append-only, so every record produced after the position was taken lies
//! at or past its offset there; a seed that is too low only makes the next
//! read-back read more. Until the first seed or delivery, the fixed topic is
//! named without partitions: the exporter may produce there before its
//! partitions' ends are known (they cannot be asked for right after the topic
//! is created), so a read-back from such a position reads every partition from
//! its start. Encoded as `kafka-v1;<topic>:<partition>:<offset>,…`, a topic
//! without a known partition as `<topic>` alone (topic names cannot hold `:`
//! or `,`).
//!
//! # The read-back
//!
//! One consumer, without a consumer group (nothing is committed), reads the
//! topics of the position one after another: each partition is assigned at
//! its saved offset and read to its end, taking `uid` and `resource_version`
//! from each record's JSON value (as produced: the exporter sends the record
//! unchanged). The end of a partition is where the broker's fetch reports it
//! (librdkafka's partition EOF), and never before the high watermark that
//! `ListOffsets` gave when the read started ([`Progress`]). The watermark
//! alone is not enough: some brokers under-report it (tansu 0.6 answers the
//! base offset of the partition's last record batch plus one, so with batches
//! of several records it lies inside the last batch), and a read that stopped
//! there missed the rest of the last batch.
//!
//! A position can lack partitions of the fixed topic: one taken before every
//! partition's end was known (a watermark request that failed or had not
//! answered yet, right after the topic was created) or partitions added to
//! the topic since. Records may have gone there after the position was taken,
//! so the read-back asks the broker for the fixed topic's partitions and reads
//! those the position does not name from their start.
//!
//! Not covered: with a templated `topic`, a partition the exporter had not
//! written to when the position was taken (a topic first written after it
//! included): records there may be produced again (at least once, as before).
//! Reading every partition of every templated topic from its start could take
//! far longer than a startup should. A read-back that fails or runs out of
//! time returns what it read, with a warning, and only costs duplicates,
//! never a loss.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::Delivered;

const VERSION: &str = "kafka-v1";

/// How long one watermark request may take.
const WATERMARK_TIMEOUT: Duration = Duration::from_secs(10);

/// Per topic, per partition: the offset after the last record known delivered
/// there (-1: nothing known for that partition). A topic can be named with no
/// partition known: everything in it counts as after the position.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Offsets(HashMap<String, Vec<i64>>);

impl Offsets {
    /// A position that names `topic` with no partition known yet.
    pub(super) fn naming(topic: &str) -> Offsets {
        Offsets(HashMap::from([(topic.to_string(), Vec::new())]))
    }

    /// Records that `partition` of `topic` holds records up to `next` (exclusive).
    pub(super) fn advance(&mut self, topic: &str, partition: i32, next: i64) {
        let Ok(p) = usize::try_from(partition) else { return };
        let v = match self.0.get_mut(topic) {
            Some(v) => v,
            None => self.0.entry(topic.to_string()).or_default(),
        };
        if v.len() <= p {
            v.resize(p + 1, -1);
        }
        v[p] = v[p].max(next);
    }

    /// Whether a partition has an offset.
    pub(super) fn knows(&self, topic: &str, partition: i32) -> bool {
        usize::try_from(partition)
            .ok()
            .and_then(|p| self.0.get(topic)?.get(p).copied())
            .is_some_and(|o| o >= 0)
    }

    /// Takes the higher offset of each partition of `other`.
    pub(super) fn merge(&mut self, other: &Offsets) {
        for (t, p, o) in other.entries() {
            self.advance(t, p, o);
        }
    }

    /// No topic named.
    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(super) fn encode(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        let sorted: BTreeMap<&String, &Vec<i64>> = self.0.iter().collect();
        for (topic, offsets) in sorted {
            let before = parts.len();
            for (p, o) in offsets.iter().enumerate() {
                if *o >= 0 {
                    parts.push(format!("{topic}:{p}:{o}"));
                }
            }
            if parts.len() == before {
                parts.push(topic.clone());
            }
        }
        format!("{VERSION};{}", parts.join(","))
    }

    pub(super) fn decode(s: &str) -> Option<Offsets> {
        let rest = s.strip_prefix(VERSION)?.strip_prefix(';')?;
        let mut out = Offsets::default();
        for part in rest.split(',').filter(|p| !p.is_empty()) {
            if !part.contains(':') {
                out.0.entry(part.to_string()).or_default();
                continue;
            }
            let mut it = part.rsplitn(3, ':');
            let offset: i64 = it.next()?.parse().ok()?;
            let partition: i32 = it.next()?.parse().ok()?;
            let topic = it.next().filter(|t| !t.is_empty())?;
            if offset < 0 || partition < 0 {
                return None;
            }
            out.advance(topic, partition, offset);
        }
        Some(out)
    }

    fn entries(&self) -> impl Iterator<Item = (&str, i32, i64)> {
        self.0.iter().flat_map(|(t, v)| {
            v.iter()
                .enumerate()
                .filter(|(_, o)| **o >= 0)
                .map(move |(p, o)| (t.as_str(), p as i32, *o))
        })
    }

    /// Per topic (in name order), its partitions with their offsets (none
    /// for a topic named without partitions).
    fn by_topic(&self) -> BTreeMap<&str, Vec<(i32, i64)>> {
        let mut out: BTreeMap<&str, Vec<(i32, i64)>> = self.0.keys().map(|t| (t.as_str(), Vec::new())).collect();
        for (t, p, o) in self.entries() {
            out.entry(t).or_default().push((p, o));
        }
        for v in out.values_mut() {
            v.sort_unstable();
        }
        out
    }
}

/// One partition being read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Partition {
    /// The next offset to read: the saved offset, then after each record read.
    next: i64,
    /// The high watermark `ListOffsets` gave before the read: the end is never before it.
    listed_end: i64,
    /// The fetch reported the end of the partition at `next`, and `next` is past `listed_end`.
    done: bool,
    /// A record was read (`next` is where the partition ended, not the saved offset).
    read_any: bool,
}

/// The progress of reading the partitions of one topic to their end: the
/// pure bookkeeping of [`read_back`].
#[derive(Debug, Default)]
struct Progress {
    partitions: BTreeMap<i32, Partition>,
}

impl Progress {
    /// Reads `partition` from `from`; `ListOffsets` said it ended at `listed_end`.
    fn add(&mut self, partition: i32, from: i64, listed_end: i64) {
        self.partitions.insert(
            partition,
            Partition {
                next: from,
                listed_end,
                done: false,
                read_any: false,
            },
        );
    }

    /// A record at `offset` was read; false if the partition is not being read.
    fn record(&mut self, partition: i32, offset: i64) -> bool {
        match self.partitions.get_mut(&partition) {
            Some(p) => {
                // The next record comes after this one, wherever the read
                // started (an offset reset may have moved it back).
                p.next = offset + 1;
                p.read_any = true;
                true
            }
            None => false,
        }
    }

    /// The fetch reached the end of `partition` (librdkafka's partition EOF).
    /// Done unless the broker said earlier that the partition reaches further.
    fn end(&mut self, partition: i32) {
        if let Some(p) = self.partitions.get_mut(&partition)
            && p.next >= p.listed_end
        {
            p.done = true;
        }
    }

    fn finished(&self) -> bool {
        self.partitions.values().all(|p| p.done)
    }

    /// Partitions not read to their end.
    fn unfinished(&self) -> usize {
        self.partitions.values().filter(|p| !p.done).count()
    }

    /// Where each partition read to its end ends: a safe position for the
    /// exporter's next records (a partition not read to its end says nothing).
    /// Without a record read, the saved offset may lie past the end (the
    /// topic was recreated): the lower of it and the listed end.
    fn ends(&self) -> impl Iterator<Item = (i32, i64)> + '_ {
        self.partitions.iter().filter(|(_, p)| p.done).map(|(id, p)| {
            let end = if p.read_any { p.next } else { p.next.min(p.listed_end) };
            (*id, end)
        })
    }
}

/// What a read-back found.
#[derive(Debug, Default)]
pub(super) struct ReadBack {
    pub(super) keys: Delivered,
    /// Where the partitions read to their end end: where the next position starts.
    pub(super) ends: Offsets,
    /// Records read.
    pub(super) records: u64,
    /// Records read without a `uid` and `resource_version` (not events: e.g.
    /// dead-letter wrappers).
    pub(super) not_events: u64,
    /// Partitions not read to their end (time ran out, or an error), with why.
    pub(super) unfinished: Vec<String>,
}

/// The connection settings of the producer's config, for a consumer.
fn consumer_config(producer: &ClientConfig, name: &str) -> ClientConfig {
    let mut cc = ClientConfig::new();
    for (k, v) in producer.config_map() {
        let keep = k == "bootstrap.servers"
            || k == "client.id"
            || k.starts_with("security.")
            || k.starts_with("ssl.")
            || k.starts_with("sasl.")
            || k == "socket.timeout.ms"
            || k == "broker.address.family";
        if keep {
            cc.set(k, v);
        }
    }
    // librdkafka's consumer wants a group id; partitions are assigned, never
    // subscribed, so the group is never joined and nothing is committed.
    cc.set("group.id", format!("event-collector-recover-{name}"))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("allow.auto.create.topics", "false")
        // The exporter never produces in transactions: committed is everything.
        .set("isolation.level", "read_committed")
        // A saved offset out of range (the topic was recreated, or retention
        // deleted it): read what the partition holds.
        .set("auto.offset.reset", "earliest");
    cc
}

/// Reads back every record past `from` in its partitions (see the module
/// doc), and every record of the partitions of `fixed_topic` that `from` does
/// not name, within `timeout`. Blocking: run it off the executor.
pub(super) fn read_back(
    producer_config: &ClientConfig,
    name: &str,
    from: &Offsets,
    fixed_topic: Option<&str>,
    timeout: Duration,
) -> Result<ReadBack, String> {
    let deadline = Instant::now() + timeout;
    let mut out = ReadBack::default();
    let topics = from.by_topic();
    if topics.is_empty() {
        return Ok(out);
    }
    let consumer: BaseConsumer = consumer_config(producer_config, name)
        .create()
        .map_err(|e| format!("cannot create a consumer: {e}"))?;
    for (topic, mut partitions) in topics {
        if fixed_topic == Some(topic)
            && let Err(why) = add_unnamed_partitions(&consumer, topic, &mut partitions, deadline)
        {
            out.unfinished.push(format!("topic `{topic}`: {why}"));
        }
        let mut progress = Progress::default();
        if let Err(why) = read_topic(&consumer, topic, &partitions, deadline, &mut progress, &mut out) {
            out.unfinished.push(format!("topic `{topic}`: {why}"));
        }
        for (p, end) in progress.ends() {
            out.ends.advance(topic, p, end);
        }
        if progress.unfinished() > 0 && Instant::now() >= deadline {
            out.unfinished.push(format!(
                "topic `{topic}`: {} partition(s) not read to their end in {timeout:?}",
                progress.unfinished()
            ));
        }
    }
    Ok(out)
}

/// Adds the partitions of `topic` that the broker lists and `partitions` (id,
/// saved offset) does not name, each from its start: what went there after
/// the position was taken lies somewhere in it.
fn add_unnamed_partitions(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: &mut Vec<(i32, i64)>,
    deadline: Instant,
) -> Result<(), String> {
    let left = deadline.saturating_duration_since(Instant::now());
    let md = consumer
        .fetch_metadata(Some(topic), left.min(WATERMARK_TIMEOUT))
        .map_err(|e| format!("cannot list its partitions: {e}; only those of the saved position are read"))?;
    let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
        return Ok(());
    };
    for id in unnamed(partitions, t.partitions().iter().map(|p| p.id())) {
        let left = deadline.saturating_duration_since(Instant::now());
        let (low, _) = consumer
            .fetch_watermarks(topic, id, left.min(WATERMARK_TIMEOUT))
            .map_err(|e| format!("cannot read the start of partition {id}: {e}"))?;
        tracing::debug!(
            topic,
            partition = id,
            from = low,
            "kafka read-back: a partition the saved position does not name, read from its start"
        );
        partitions.push((id, low.max(0)));
    }
    partitions.sort_unstable();
    Ok(())
}

/// The ids of `listed` that `named` (id, offset) does not have.
fn unnamed(named: &[(i32, i64)], listed: impl Iterator<Item = i32>) -> Vec<i32> {
    let mut out: Vec<i32> = listed.filter(|id| !named.iter().any(|(n, _)| n == id)).collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// Reads `partitions` (id, saved offset) of `topic` to their end, or until `deadline`.
fn read_topic(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: &[(i32, i64)],
    deadline: Instant,
    progress: &mut Progress,
    out: &mut ReadBack,
) -> Result<(), String> {
    let left = || deadline.saturating_duration_since(Instant::now());
    let mut tpl = TopicPartitionList::new();
    for &(p, from) in partitions {
        if left().is_zero() {
            return Err("no time left".into());
        }
        let (_, listed_end) = consumer
            .fetch_watermarks(topic, p, left().min(WATERMARK_TIMEOUT))
            .map_err(|e| format!("cannot read the end of partition {p}: {e}"))?;
        progress.add(p, from, listed_end);
        tpl.add_partition_offset(topic, p, Offset::Offset(from))
            .map_err(|e| format!("cannot assign partition {p}: {e}"))?;
    }
    consumer
        .assign(&tpl)
        .map_err(|e| format!("cannot assign the partitions: {e}"))?;
    // One topic at a time: a partition EOF names only the partition.
    while !progress.finished() && !left().is_zero() {
        match consumer.poll(left().min(Duration::from_millis(200))) {
            None => {}
            Some(Ok(m)) => {
                if m.topic() != topic || !progress.record(m.partition(), m.offset()) {
                    continue;
                }
                out.records += 1;
                if !m.payload().is_some_and(|v| out.keys.insert_json(v)) {
                    out.not_events += 1;
                }
            }
            Some(Err(KafkaError::PartitionEOF(p))) => progress.end(p),
            Some(Err(e)) => {
                tracing::debug!(topic, error = %e, "kafka read-back: consumer error; going on");
            }
        }
    }
    consumer
        .unassign()
        .map_err(|e| format!("cannot unassign the partitions: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_round_trip_and_keep_the_highest() {
        let mut o = Offsets::default();
        assert!(o.is_empty());
        o.advance("k8s-events", 2, 10);
        o.advance("k8s-events", 2, 7);
        o.advance("k8s-events.ns_a", 0, 3);
        assert!(!o.is_empty());
        assert!(o.knows("k8s-events", 2) && !o.knows("k8s-events", 0) && !o.knows("x", 0));
        assert_eq!(o.encode(), "kafka-v1;k8s-events:2:10,k8s-events.ns_a:0:3");
        assert_eq!(Offsets::decode(&o.encode()), Some(o.clone()));
        assert_eq!(Offsets::decode("kafka-v1;"), Some(Offsets::default()));
        for bad in [
            "volume-v1;-;1;2;3",
            "kafka-v1;t:x:1",
            "kafka-v1;:0:1",
            "kafka-v1;t:0:-4",
            "kafka-v1;t:-1:4",
            "kafka-v1;t:0",
            "kafka-v1",
        ] {
            assert_eq!(Offsets::decode(bad), None, "{bad}");
        }
        let by: Vec<_> = o.by_topic().into_iter().collect();
        assert_eq!(
            by,
            vec![("k8s-events", vec![(2, 10)]), ("k8s-events.ns_a", vec![(0, 3)])]
        );
    }

    #[test]
    fn the_consumer_keeps_the_connection_settings_and_only_reads() {
        let mut producer = ClientConfig::new();
        producer
            .set("bootstrap.servers", "k0:9092")
            .set("security.protocol", "sasl_ssl")
            .set("sasl.mechanism", "SCRAM-SHA-512")
            .set("ssl.ca.location", "/ca.pem")
            .set("enable.idempotence", "true")
            .set("compression.codec", "lz4")
            .set("acks", "all");
        let c = consumer_config(&producer, "kafka");
        for (k, v) in [
            ("bootstrap.servers", "k0:9092"),
            ("security.protocol", "sasl_ssl"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("ssl.ca.location", "/ca.pem"),
            ("enable.auto.commit", "false"),
            ("enable.partition.eof", "true"),
            ("auto.offset.reset", "earliest"),
            ("group.id", "event-collector-recover-kafka"),
        ] {
            assert_eq!(c.get(k), Some(v), "{k}");
        }
        for k in ["enable.idempotence", "compression.codec", "acks"] {
            assert_eq!(c.get(k), None, "producer setting {k} is not passed on");
        }
    }

    #[test]
    fn a_topic_named_without_partitions() {
        let mut o = Offsets::naming("events");
        assert!(!o.is_empty(), "a named topic is a position");
        assert_eq!(o.encode(), "kafka-v1;events");
        assert_eq!(Offsets::decode("kafka-v1;events"), Some(o.clone()));
        assert_eq!(o.by_topic().into_iter().collect::<Vec<_>>(), vec![("events", vec![])]);
        assert!(!o.knows("events", 0));
        // Once a partition is known, the topic is named through it.
        o.advance("events", 1, 4);
        assert_eq!(o.encode(), "kafka-v1;events:1:4");
        let mixed = Offsets::decode("kafka-v1;a,b:0:3").unwrap();
        assert_eq!(mixed.encode(), "kafka-v1;a,b:0:3");
        assert_eq!(
            mixed.by_topic().into_iter().collect::<Vec<_>>(),
            vec![("a", vec![]), ("b", vec![(0, 3)])]
        );
    }

    #[test]
    fn partitions_the_position_does_not_name() {
        let named = [(0, 12), (2, 7)];
        assert_eq!(unnamed(&named, [0, 1, 2, 3].into_iter()), vec![1, 3]);
        assert_eq!(unnamed(&named, [3, 1, 3].into_iter()), vec![1, 3], "sorted, once each");
        assert!(unnamed(&named, [2, 0].into_iter()).is_empty());
        assert_eq!(unnamed(&[], [1, 0].into_iter()), vec![0, 1]);
    }

    #[test]
    fn merge_keeps_the_highest_offset_of_each_partition() {
        let mut a = Offsets::decode("kafka-v1;t:0:5,t:1:9").unwrap();
        let b = Offsets::decode("kafka-v1;t:0:7,t:1:2,u:3:1").unwrap();
        a.merge(&b);
        assert_eq!(a.encode(), "kafka-v1;t:0:7,t:1:9,u:3:1");
    }

    #[test]
    fn a_partition_ends_at_the_fetched_end_never_before_the_listed_one() {
        let mut p = Progress::default();
        // Partition 0: the broker listed its end at 9 but it holds records to 19
        // (an under-reported watermark): the read goes on to the fetched end.
        p.add(0, 8, 9);
        // Partition 1: nothing past the saved offset.
        p.add(1, 4, 4);
        // Partition 2: an end reported before the listed one does not count.
        p.add(2, 0, 3);
        assert!(!p.finished());
        for o in 8..20 {
            assert!(p.record(0, o));
        }
        assert!(!p.record(7, 0), "not a partition being read");
        p.end(1);
        assert_eq!(
            p.unfinished(),
            2,
            "partition 0 is read past its listed end until the fetch ends it"
        );
        p.end(0);
        assert_eq!(p.unfinished(), 1);
        p.end(2);
        assert_eq!(p.unfinished(), 1, "partition 2 ended before its listed end");
        for o in 0..3 {
            p.record(2, o);
        }
        p.end(2);
        assert!(p.finished());
        let ends: Vec<_> = p.ends().collect();
        assert_eq!(ends, vec![(0, 20), (1, 4), (2, 3)]);
    }

    #[test]
    fn only_partitions_read_to_their_end_give_a_position() {
        let mut p = Progress::default();
        p.add(0, 10, 12);
        p.add(1, 3, 3);
        // Partition 2: the saved offset lies past the end (a recreated topic).
        p.add(2, 50, 0);
        p.record(0, 10);
        p.end(1);
        p.end(2);
        assert_eq!(p.ends().collect::<Vec<_>>(), vec![(1, 3), (2, 0)]);
        // A reset to an earlier offset (the saved one was out of range) reads from there.
        p.record(0, 0);
        p.record(0, 12);
        p.end(0);
        assert_eq!(p.ends().collect::<Vec<_>>(), vec![(0, 13), (1, 3), (2, 0)]);
    }
}
