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
//! the topic is seen) and of the topics of the saved position (by the
//! read-back). A watermark read at time T is below every record produced
//! after T, so seeding never makes the position skip anything. A partition is append-only, so every record produced after the
//! position was taken lies at or past its offset there. Encoded as
//! `kafka-v1;<topic>:<partition>:<offset>,…` (topic names cannot hold `:` or `,`).
//!
//! # The read-back
//!
//! A consumer without a group (no offsets committed) is assigned each
//! partition of the position at its offset and reads up to the high watermark
//! it had when the read-back started, taking `uid` and `resource_version` from
//! each record's JSON value. That is exact for every partition in the
//! position. Not covered: a partition the exporter had not written to when the
//! position was taken and whose topic it did not know at startup (with a
//! templated `topic`, a topic first written after the position; or partitions
//! added to a topic meanwhile): records there may be produced again (at least
//! once, as before). A read-back that fails or runs out of time only costs
//! duplicates, never a loss.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::Delivered;

const VERSION: &str = "kafka-v1";

/// How long one metadata or watermark request may take.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// Per topic, per partition: the offset after the last record known delivered
/// there (-1: nothing known for that partition).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Offsets(HashMap<String, Vec<i64>>);

impl Offsets {
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

    pub(super) fn is_empty(&self) -> bool {
        self.0.values().all(|v| v.iter().all(|o| *o < 0))
    }

    pub(super) fn encode(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        let sorted: BTreeMap<&String, &Vec<i64>> = self.0.iter().collect();
        for (topic, offsets) in sorted {
            for (p, o) in offsets.iter().enumerate() {
                if *o >= 0 {
                    parts.push(format!("{topic}:{p}:{o}"));
                }
            }
        }
        format!("{VERSION};{}", parts.join(","))
    }

    pub(super) fn decode(s: &str) -> Option<Offsets> {
        let rest = s.strip_prefix(VERSION)?.strip_prefix(';')?;
        let mut out = Offsets::default();
        for part in rest.split(',').filter(|p| !p.is_empty()) {
            let mut it = part.rsplitn(3, ':');
            let offset: i64 = it.next()?.parse().ok()?;
            let partition: i32 = it.next()?.parse().ok()?;
            let topic = it.next().filter(|t| !t.is_empty())?;
            if offset < 0 {
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
}

/// What a read-back found.
#[derive(Debug, Default)]
pub(super) struct ReadBack {
    pub(super) keys: Delivered,
    /// The high watermarks of the partitions looked at: where the next position starts.
    pub(super) watermarks: Offsets,
    pub(super) records: u64,
    /// Partitions not read to their end in time.
    pub(super) unfinished: usize,
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
            || k == "socket.timeout.ms";
        if keep {
            cc.set(k, v);
        }
    }
    // A group id is required by librdkafka's consumer; nothing is ever committed.
    cc.set("group.id", format!("event-collector-recover-{name}"))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest");
    cc
}

/// Reads back every record past `from` in its partitions (see the module
/// doc); `topics` are read for their watermarks too (the fixed topic).
/// Blocking: run it off the executor.
pub(super) fn read_back(
    producer_config: &ClientConfig,
    name: &str,
    from: &Offsets,
    topics: &[String],
    timeout: Duration,
) -> Result<ReadBack, String> {
    let deadline = Instant::now() + timeout;
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(100))
    };
    let consumer: BaseConsumer = consumer_config(producer_config, name)
        .create()
        .map_err(|e| format!("cannot create a consumer: {e}"))?;
    let mut out = ReadBack::default();
    let mut all_topics: Vec<String> = topics.to_vec();
    all_topics.extend(from.0.keys().cloned());
    all_topics.sort();
    all_topics.dedup();

    // Where each partition ends now.
    let mut ends: HashMap<(String, i32), i64> = HashMap::new();
    for topic in &all_topics {
        // Brokers that do not answer must not hold the startup of every exporter for long.
        let md = consumer
            .fetch_metadata(Some(topic), left().min(METADATA_TIMEOUT))
            .map_err(|e| format!("cannot read the metadata of topic `{topic}`: {e}"))?;
        let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
            continue;
        };
        if t.error().is_some() {
            // Not there (yet): nothing to read, nothing to watermark.
            continue;
        }
        for p in t.partitions() {
            let (_, high) = consumer
                .fetch_watermarks(topic, p.id(), left().min(METADATA_TIMEOUT))
                .map_err(|e| format!("cannot read the end of `{topic}` partition {}: {e}", p.id()))?;
            out.watermarks.advance(topic, p.id(), high);
            ends.insert((topic.clone(), p.id()), high);
        }
    }

    // Assign the partitions with something past the position.
    let mut tpl = TopicPartitionList::new();
    let mut remaining: HashMap<(String, i32), i64> = HashMap::new();
    for (topic, partition, offset) in from.entries() {
        let Some(&high) = ends.get(&(topic.to_string(), partition)) else {
            continue;
        };
        if offset < high {
            tpl.add_partition_offset(topic, partition, Offset::Offset(offset))
                .map_err(|e| format!("cannot assign `{topic}` partition {partition}: {e}"))?;
            remaining.insert((topic.to_string(), partition), high);
        }
    }
    if remaining.is_empty() {
        return Ok(out);
    }
    consumer
        .assign(&tpl)
        .map_err(|e| format!("cannot assign the partitions to read back: {e}"))?;
    while !remaining.is_empty() && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Ok(m)) => {
                let key = (m.topic().to_string(), m.partition());
                if let Some(payload) = m.payload() {
                    out.keys.insert_json(payload);
                }
                out.records += 1;
                if remaining.get(&key).is_some_and(|high| m.offset() + 1 >= *high) {
                    remaining.remove(&key);
                }
            }
            Some(Err(e))
                if matches!(e, KafkaError::PartitionEOF(_))
                    || e.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF) =>
            {
                // At the end of some partition: drop every partition whose position reached its end.
                if let Ok(pos) = consumer.position() {
                    for el in pos.elements() {
                        let key = (el.topic().to_string(), el.partition());
                        if let (Offset::Offset(at), Some(high)) = (el.offset(), remaining.get(&key))
                            && at >= *high
                        {
                            remaining.remove(&key);
                        }
                    }
                }
            }
            Some(Err(e)) => {
                tracing::debug!(exporter = name, error = %e, "kafka read-back: consumer error; going on");
            }
        }
    }
    out.unfinished = remaining.len();
    Ok(out)
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
        assert_eq!(o.encode(), "kafka-v1;k8s-events:2:10,k8s-events.ns_a:0:3");
        assert_eq!(Offsets::decode(&o.encode()), Some(o.clone()));
        assert_eq!(Offsets::decode("kafka-v1;"), Some(Offsets::default()));
        for bad in [
            "volume-v1;-;1;2;3",
            "kafka-v1;t:x:1",
            "kafka-v1;:0:1",
            "kafka-v1;t:0:-4",
            "kafka-v1;t:0",
        ] {
            assert_eq!(Offsets::decode(bad), None, "{bad}");
        }
        let mut e: Vec<_> = o.entries().map(|(t, p, x)| (t.to_string(), p, x)).collect();
        e.sort();
        assert_eq!(e, vec![("k8s-events".into(), 2, 10), ("k8s-events.ns_a".into(), 0, 3)]);
    }
}
