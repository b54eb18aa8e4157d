//! Committed offsets: an internal partition log, `__consumer_offsets-0`,
//! replayed into memory at open — the way Kafka stores them.
//!
//! Each commit appends one record per partition: key
//! `[1][group len u16][group][topic len u16][topic][partition u32]`, value
//! `[committed offset u64]` (big-endian), or no value (a tombstone) when the
//! offset is removed (topic deleted, group reset). Replaying the records in
//! order gives the latest offset of every (group, partition).
//!
//! Appends follow the log's `SyncPolicy` like any topic, so a commit that
//! returned survives `kill -9`, and under `SyncPolicy::Always` power loss.
//!
//! **Bounded size.** After enough commits the store rolls its segment,
//! appends a snapshot of every live offset, fsyncs it, and only then deletes
//! the older segments. A crash before the deletion leaves the old records
//! followed by (part of) the snapshot, which replays to the same state; a
//! crash after it leaves the complete, synced snapshot. The store therefore
//! holds at most about two snapshots' worth of records plus the commits
//! between them.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::cluster::{Acks, ClusterLink};
use crate::config::SyncPolicy;
use crate::error::{Error, Result};
use crate::format::RecordParts;
use crate::metrics::AppendTimer;
use crate::record::TopicPartition;
use crate::storage::{now_ms, PartitionLog};

/// Name of the internal topic (reserved: users cannot create it).
pub(crate) const OFFSETS_TOPIC: &str = "__consumer_offsets";
const KEY_VERSION: u8 = 1;
/// Snapshot once this many records were appended since the last snapshot
/// and they outnumber the live offsets twice.
const SNAPSHOT_MIN_RECORDS: u64 = 10_000;

type GroupOffsets = BTreeMap<TopicPartition, u64>;

pub(crate) struct OffsetStore {
    log: Arc<PartitionLog>,
    sync: SyncPolicy,
    state: Mutex<StoreState>,
    /// On a cluster: commits go to the offsets topic's current leader and
    /// are acknowledged by every in-sync replica (`log` is where the store
    /// was replayed from).
    link: Option<Arc<ClusterLink>>,
}

struct StoreState {
    groups: HashMap<String, GroupOffsets>,
    records_since_snapshot: u64,
    /// Topics deleted (and not created again) since the store opened:
    /// commits for them store nothing. A commit checked against the topic
    /// table before the deletion may arrive after its offsets were removed.
    removed: HashSet<String>,
}

pub(crate) fn encode_key(group: &str, tp: &TopicPartition) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + group.len() + tp.topic.len());
    k.push(KEY_VERSION);
    k.extend_from_slice(&(group.len() as u16).to_be_bytes());
    k.extend_from_slice(group.as_bytes());
    k.extend_from_slice(&(tp.topic.len() as u16).to_be_bytes());
    k.extend_from_slice(tp.topic.as_bytes());
    k.extend_from_slice(&tp.partition.to_be_bytes());
    k
}

fn decode_key(k: &[u8]) -> Option<(String, TopicPartition)> {
    let (&version, rest) = k.split_first()?;
    if version != KEY_VERSION {
        return None;
    }
    let take_str = |b: &[u8]| -> Option<(String, usize)> {
        let len = u16::from_be_bytes(b.get(..2)?.try_into().ok()?) as usize;
        let s = std::str::from_utf8(b.get(2..2 + len)?).ok()?;
        Some((s.to_owned(), 2 + len))
    };
    let (group, n) = take_str(rest)?;
    let rest = &rest[n..];
    let (topic, n) = take_str(rest)?;
    let rest = &rest[n..];
    let partition = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
    (rest.len() == 4).then(|| (group, TopicPartition::new(topic, partition)))
}

/// Decodes one record of the store: the group, partition and committed
/// offset (`None`: removed), or why the record is unreadable.
pub(crate) fn decode_record(
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) -> std::result::Result<(String, TopicPartition, Option<u64>), &'static str> {
    let (group, tp) = key
        .and_then(decode_key)
        .ok_or("unreadable consumer-offset key")?;
    let offset = match value {
        Some(v) => Some(
            v.try_into()
                .map(u64::from_be_bytes)
                .map_err(|_| "consumer-offset value is not 8 bytes")?,
        ),
        None => None,
    };
    Ok((group, tp, offset))
}

impl OffsetStore {
    /// Replays the store's log into memory.
    pub(crate) fn open(log: Arc<PartitionLog>, sync: SyncPolicy) -> Result<OffsetStore> {
        let mut groups: HashMap<String, GroupOffsets> = HashMap::new();
        let mut next = log.start_offset();
        let end = log.end_offset();
        let mut records = 0u64;
        while next < end {
            let batch = log.read(next, 4096)?;
            let Some(last) = batch.last() else { break };
            next = last.offset() + 1;
            for m in &batch {
                records += 1;
                let (group, tp, value) = decode_record(m.key(), m.value())
                    .map_err(|why| Error::corrupt(log.dir(), m.offset(), why))?;
                match value {
                    Some(off) => {
                        groups.entry(group).or_default().insert(tp, off);
                    }
                    None => {
                        if let Some(g) = groups.get_mut(&group) {
                            g.remove(&tp);
                            if g.is_empty() {
                                groups.remove(&group);
                            }
                        }
                    }
                }
            }
        }
        Ok(OffsetStore {
            log,
            sync,
            state: Mutex::new(StoreState {
                groups,
                records_since_snapshot: records,
                removed: HashSet::new(),
            }),
            link: None,
        })
    }

    /// The store of a cluster: replayed from `log` (the offsets topic's
    /// leader), written through `link`.
    pub(crate) fn open_replicated(
        log: Arc<PartitionLog>,
        link: Arc<ClusterLink>,
    ) -> Result<OffsetStore> {
        let mut store = OffsetStore::open(log, SyncPolicy::Never)?;
        store.link = Some(link);
        Ok(store)
    }

    pub(crate) fn log(&self) -> &Arc<PartitionLog> {
        &self.log
    }

    /// The log commits go to now.
    fn current_log(&self) -> Arc<PartitionLog> {
        self.link
            .as_ref()
            .and_then(|l| l.read_log(0))
            .unwrap_or_else(|| Arc::clone(&self.log))
    }

    /// Durably records `offsets` (`None` removes one) for `group`.
    pub(crate) fn commit(
        &self,
        group: &str,
        offsets: &[(TopicPartition, Option<u64>)],
    ) -> Result<()> {
        let mut st = self.state.lock();
        let stale = |(tp, o): &&(TopicPartition, Option<u64>)| {
            o.is_some() && st.removed.contains(&tp.topic)
        };
        let offsets: Cow<'_, [_]> = if !offsets.iter().any(|e| stale(&e)) {
            Cow::Borrowed(offsets)
        } else {
            offsets.iter().filter(|e| !stale(e)).cloned().collect()
        };
        if offsets.is_empty() {
            return Ok(());
        }
        self.append(group, &offsets)?;
        let g = st.groups.entry(group.to_owned()).or_default();
        for (tp, off) in offsets.iter() {
            match off {
                Some(o) => {
                    g.insert(tp.clone(), *o);
                }
                None => {
                    g.remove(tp);
                }
            }
        }
        if g.is_empty() {
            st.groups.remove(group);
        }
        st.records_since_snapshot += offsets.len() as u64;
        let live: u64 = st.groups.values().map(|g| g.len() as u64).sum();
        if st.records_since_snapshot >= SNAPSHOT_MIN_RECORDS.max(2 * live) {
            self.snapshot(&mut st)?;
        }
        Ok(())
    }

    fn append(&self, group: &str, offsets: &[(TopicPartition, Option<u64>)]) -> Result<()> {
        let keys: Vec<Vec<u8>> = offsets
            .iter()
            .map(|(tp, _)| encode_key(group, tp))
            .collect();
        let values: Vec<Option<[u8; 8]>> = offsets
            .iter()
            .map(|(_, o)| o.map(u64::to_be_bytes))
            .collect();
        let ts = now_ms();
        let records = keys.iter().zip(&values).map(|(k, v)| {
            (
                RecordParts::new(Some(k), v.as_ref().map(|v| &v[..]), &[]),
                ts,
            )
        });
        if let Some(link) = &self.link {
            return link.append(0, Acks::All, records, |_, _| {}, AppendTimer::start());
        }
        let end = self.log.append(
            keys.iter().zip(&values).map(|(k, v)| {
                (
                    RecordParts::new(Some(k), v.as_ref().map(|v| &v[..]), &[]),
                    ts,
                )
            }),
            |_, _| {},
        )?;
        if self.sync == SyncPolicy::Always {
            self.log.sync_to(end)?;
        }
        Ok(())
    }

    /// Rewrites every live offset into a fresh segment, syncs it, and drops
    /// the older segments (see the module docs for why a crash is safe).
    fn snapshot(&self, st: &mut StoreState) -> Result<()> {
        let log = self.current_log();
        let base = log.roll_now()?;
        let mut groups: Vec<(&String, &GroupOffsets)> = st.groups.iter().collect();
        groups.sort_by(|a, b| a.0.cmp(b.0));
        for (group, offsets) in groups {
            let list: Vec<(TopicPartition, Option<u64>)> = offsets
                .iter()
                .map(|(tp, o)| (tp.clone(), Some(*o)))
                .collect();
            self.append(group, &list)?;
        }
        log.sync()?;
        log.delete_before(base)?;
        st.records_since_snapshot = st.groups.values().map(|g| g.len() as u64).sum();
        Ok(())
    }

    pub(crate) fn committed(&self, group: &str, tp: &TopicPartition) -> Option<u64> {
        self.state
            .lock()
            .groups
            .get(group)
            .and_then(|g| g.get(tp).copied())
    }

    pub(crate) fn group_offsets(&self, group: &str) -> GroupOffsets {
        self.state
            .lock()
            .groups
            .get(group)
            .cloned()
            .unwrap_or_default()
    }

    pub(crate) fn groups(&self) -> Vec<String> {
        self.state.lock().groups.keys().cloned().collect()
    }

    /// Removes every group's offsets for `topic` (the topic was deleted).
    pub(crate) fn remove_topic(&self, topic: &str) -> Result<()> {
        let doomed: Vec<(String, TopicPartition)> = {
            let mut st = self.state.lock();
            st.removed.insert(topic.to_owned());
            st.groups
                .iter()
                .flat_map(|(g, offs)| {
                    offs.keys()
                        .filter(|tp| tp.topic == topic)
                        .map(move |tp| (g.clone(), tp.clone()))
                })
                .collect()
        };
        let mut by_group: BTreeMap<String, Vec<(TopicPartition, Option<u64>)>> = BTreeMap::new();
        for (g, tp) in doomed {
            by_group.entry(g).or_default().push((tp, None));
        }
        for (g, list) in by_group {
            self.commit(&g, &list)?;
        }
        Ok(())
    }

    /// `topic` was created (again): its commits are stored from now on.
    pub(crate) fn topic_created(&self, topic: &str) {
        self.state.lock().removed.remove(topic);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Compression;
    use crate::storage::{Limits, OpenHints};

    fn store(dir: &std::path::Path, create: bool) -> OffsetStore {
        let limits = Limits {
            segment_bytes: 64 * 1024,
            compacted: false,
            retention_bytes: None,
            retention_ms: None,
            compression: Compression::None,
        };
        let log = if create {
            PartitionLog::create(dir, Arc::from(OFFSETS_TOPIC), 0, limits).unwrap()
        } else {
            PartitionLog::open(
                dir,
                Arc::from(OFFSETS_TOPIC),
                0,
                limits,
                OpenHints {
                    same_boot: true,
                    ..Default::default()
                },
            )
            .unwrap()
        };
        OffsetStore::open(Arc::new(log), SyncPolicy::Never).unwrap()
    }

    /// Regression: a commit checked against the topic table before its
    /// topic's deletion, arriving after the deletion removed the topic's
    /// offsets, stored them again (the group came back in listings and
    /// lag, and a topic of the same name created later started from them).
    #[test]
    fn commits_for_a_removed_topic_store_nothing_until_it_is_created_again() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path(), true);
        let (t0, u0) = (TopicPartition::new("t", 0), TopicPartition::new("u", 0));
        s.commit("g", &[(t0.clone(), Some(5))]).unwrap();
        s.remove_topic("t").unwrap();
        assert_eq!(s.committed("g", &t0), None);
        s.commit("g", &[(t0.clone(), Some(7)), (u0.clone(), Some(3))])
            .unwrap();
        assert_eq!(s.committed("g", &t0), None, "stored for a removed topic");
        assert_eq!(s.committed("g", &u0), Some(3));
        s.topic_created("t");
        s.commit("g", &[(t0.clone(), Some(9))]).unwrap();
        assert_eq!(s.committed("g", &t0), Some(9));
    }

    #[test]
    fn keys_round_trip() {
        let tp = TopicPartition::new("orders", 7);
        assert_eq!(
            decode_key(&encode_key("billing", &tp)),
            Some(("billing".into(), tp))
        );
        assert_eq!(decode_key(b"\x02junk"), None);
    }

    #[test]
    fn commits_replay_after_reopen_and_tombstones_remove() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path(), true);
        let t0 = TopicPartition::new("t", 0);
        let t1 = TopicPartition::new("t", 1);
        s.commit("g", &[(t0.clone(), Some(5)), (t1.clone(), Some(9))])
            .unwrap();
        s.commit("g", &[(t0.clone(), Some(6))]).unwrap();
        s.commit("h", &[(t0.clone(), Some(1))]).unwrap();
        s.remove_topic("t").unwrap();
        s.topic_created("t");
        s.commit("g", &[(t1.clone(), Some(10))]).unwrap();
        drop(s);
        let s = store(dir.path(), false);
        assert_eq!(s.committed("g", &t0), None);
        assert_eq!(s.committed("g", &t1), Some(10));
        assert_eq!(s.groups(), vec!["g".to_string()]);
    }

    #[test]
    fn the_store_stays_bounded_however_many_commits() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path(), true);
        for i in 0..60_000u64 {
            let tp = TopicPartition::new("t", (i % 16) as u32);
            s.commit("g", &[(tp, Some(i))]).unwrap();
        }
        let stored = s.log().end_offset() - s.log().start_offset();
        assert!(
            stored <= 2 * SNAPSHOT_MIN_RECORDS + 64,
            "{stored} records kept"
        );
        drop(s);
        let s = store(dir.path(), false);
        for p in 0..16u32 {
            let want = 60_000 - 16 + p as u64;
            assert_eq!(s.committed("g", &TopicPartition::new("t", p)), Some(want));
        }
    }
}
