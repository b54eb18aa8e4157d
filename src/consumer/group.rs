//! The group coordinator: membership, ownership of partitions, fencing, and
//! the admin view ([`ConsumerGroup`]).
//!
//! Invariants the coordinator keeps for each group:
//! - A partition has at most one owner (`owners`); a member's `owned` set
//!   and `owners` always agree.
//! - A partition changes owner only after its old owner released it (at its
//!   own `poll`, `close` or drop) or was evicted for missing its session
//!   timeout. Nobody waits for anybody: a member takes what is free now and
//!   the rest at a later poll.
//! - Only a current member that owns a partition may commit its offset
//!   (fencing); a member evicted by the timeout gets [`Error::Fenced`].
//!
//! The protocol is Kafka's cooperative rebalance, driven by polls instead of
//! heartbeats: on each poll a member (1) evicts members whose session
//! expired, (2) recomputes the target assignment if membership, a
//! subscription or a topic's partition count changed, (3) gives up the
//! partitions the target moved away from it, and (4) takes the partitions
//! the target gives it that nobody else owns.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::assignor::{Assignment, Assignor, MemberInfo};
use super::offsets::OffsetStore;
use super::TopicSource;
use crate::error::{Error, Result};
use crate::metrics::GroupMetrics;
use crate::record::TopicPartition;
use crate::storage::Notify;

pub(crate) struct Member {
    pub topics: BTreeSet<String>,
    pub owned: BTreeSet<TopicPartition>,
    pub last_seen: Instant,
    pub session_timeout: Duration,
    pub assignor: Assignor,
    pub joined: u64,
    pub notify: Arc<Notify>,
}

#[derive(Default)]
pub(crate) struct GroupState {
    pub members: BTreeMap<String, Member>,
    pub owners: HashMap<TopicPartition, String>,
    pub target: Assignment,
    /// Recompute `target` at the next poll.
    pub dirty: bool,
    /// Topic metadata epoch the target was computed for.
    pub epoch: u64,
    /// How many times `target` was computed (Kafka's generation id).
    pub generation: u64,
}

impl GroupState {
    /// Removes members whose session expired; returns their ids.
    pub(crate) fn evict_expired(&mut self, now: Instant) -> Vec<String> {
        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| now.duration_since(m.last_seen) > m.session_timeout)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &expired {
            tracing::info!(member = %id, "consumer group member evicted: session timeout passed");
            self.remove_member(id);
        }
        expired
    }

    /// Takes a member out, freeing its partitions, and wakes the others.
    pub(crate) fn remove_member(&mut self, id: &str) {
        if let Some(m) = self.members.remove(id) {
            for tp in m.owned {
                self.owners.remove(&tp);
            }
            self.dirty = true;
            self.wake_all();
        }
    }

    pub(crate) fn wake_all(&self) {
        for m in self.members.values() {
            m.notify.notify();
        }
    }

    /// Recomputes the target of group `group` with the oldest member's
    /// assignor: a rebalance, a new generation.
    pub(crate) fn recompute(&mut self, group: &str, source: &dyn TopicSource) {
        let infos: Vec<MemberInfo> = self
            .members
            .iter()
            .map(|(id, m)| MemberInfo {
                id: id.clone(),
                topics: m.topics.clone(),
                owned: m.owned.clone(),
            })
            .collect();
        let topics: BTreeSet<&String> = self.members.values().flat_map(|m| &m.topics).collect();
        let counts: BTreeMap<String, u32> = topics
            .into_iter()
            .filter_map(|t| source.partition_count(t).map(|n| (t.clone(), n)))
            .collect();
        let assignor = self
            .members
            .values()
            .min_by_key(|m| m.joined)
            .map_or(Assignor::default(), |m| m.assignor);
        self.target = assignor.assign(&infos, &counts);
        self.dirty = false;
        self.epoch = source.metadata_epoch();
        self.generation += 1;
        let sizes: Vec<usize> = self.target.values().map(BTreeSet::len).collect();
        tracing::info!(
            group = %group,
            generation = self.generation,
            members = self.members.len(),
            assignor = ?assignor,
            partitions = sizes.iter().sum::<usize>(),
            assignment_sizes = ?sizes,
            "consumer group rebalanced"
        );
        self.wake_all();
    }
}

/// Hosts every group of a log and the offset store.
pub(crate) struct Coordinator {
    groups: Mutex<HashMap<String, Arc<Mutex<GroupState>>>>,
    pub offsets: Arc<OffsetStore>,
    next_member: AtomicU64,
}

impl Coordinator {
    pub(crate) fn new(offsets: Arc<OffsetStore>) -> Coordinator {
        Coordinator {
            groups: Mutex::new(HashMap::new()),
            offsets,
            next_member: AtomicU64::new(1),
        }
    }

    pub(crate) fn group(&self, id: &str) -> Arc<Mutex<GroupState>> {
        Arc::clone(self.groups.lock().entry(id.to_owned()).or_default())
    }

    pub(crate) fn new_member_id(&self, group: &str) -> (String, u64) {
        let n = self.next_member.fetch_add(1, Ordering::Relaxed);
        (format!("{group}-member-{n}"), n)
    }

    /// Groups that have members or committed offsets.
    pub(crate) fn group_ids(&self) -> Vec<String> {
        let mut ids: BTreeSet<String> = self.offsets.groups().into_iter().collect();
        for (id, g) in self.groups.lock().iter() {
            if !g.lock().members.is_empty() {
                ids.insert(id.clone());
            }
        }
        ids.into_iter().collect()
    }
}

/// Every known group's part of a metrics snapshot (see [`Coordinator::group_ids`]).
pub(crate) fn group_metrics(
    coordinator: &Arc<Coordinator>,
    source: &Arc<dyn TopicSource>,
) -> Vec<GroupMetrics> {
    coordinator
        .group_ids()
        .into_iter()
        .filter_map(|id| {
            let group = ConsumerGroup {
                id,
                coordinator: Arc::clone(coordinator),
                source: Arc::clone(source),
            };
            group.metrics().ok()
        })
        .collect()
}

/// Checks a group id: non-empty, at most 249 characters, no control
/// characters (Kafka accepts any string; brook keeps ids printable).
pub(crate) fn validate_group_id(group: &str) -> Result<()> {
    let reason = if group.is_empty() {
        Some("empty")
    } else if group.len() > 249 {
        Some("longer than 249 characters")
    } else if group.chars().any(char::is_control) {
        Some("contains control characters")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidGroupId {
            group: group.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// A member of a group as [`ConsumerGroup::members`] describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemberDescription {
    /// The member's id (unique in the log).
    pub member_id: String,
    /// Topics it subscribed to.
    pub topics: Vec<String>,
    /// Partitions it owns now.
    pub assignment: Vec<TopicPartition>,
}

/// Lag of one partition for a group.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct PartitionLag {
    /// The partition.
    pub topic_partition: TopicPartition,
    /// The group's committed offset (the next offset it will read).
    pub committed: Option<u64>,
    /// The partition's end offset.
    pub end_offset: u64,
    /// Records after the committed offset (after the start offset when
    /// nothing is committed).
    pub lag: u64,
}

/// Where [`ConsumerGroup::reset_offsets`] moves committed offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResetTo {
    /// The first stored offset.
    Earliest,
    /// The end of the partition (skip everything stored).
    Latest,
    /// This offset (must be within the stored range).
    Offset(u64),
    /// The earliest offset with a timestamp at least this (else the end).
    Timestamp(i64),
}

/// The admin view of a consumer group: members, committed offsets, lag,
/// offset resets. Cheap to clone.
#[derive(Clone)]
pub struct ConsumerGroup {
    pub(crate) id: String,
    pub(crate) coordinator: Arc<Coordinator>,
    pub(crate) source: Arc<dyn TopicSource>,
}

impl std::fmt::Debug for ConsumerGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerGroup")
            .field("id", &self.id)
            .finish()
    }
}

impl ConsumerGroup {
    /// The group id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The members now (members past their session timeout are evicted first).
    pub fn members(&self) -> Vec<MemberDescription> {
        let g = self.coordinator.group(&self.id);
        let mut g = g.lock();
        g.evict_expired(Instant::now());
        g.members
            .iter()
            .map(|(id, m)| MemberDescription {
                member_id: id.clone(),
                topics: m.topics.iter().cloned().collect(),
                assignment: m.owned.iter().cloned().collect(),
            })
            .collect()
    }

    /// The committed offset of a partition, if any.
    pub fn committed(&self, tp: &TopicPartition) -> Result<Option<u64>> {
        Ok(self.coordinator.offsets.committed(&self.id, tp))
    }

    /// Topics the group reads: its members' subscriptions and the topics it
    /// has committed offsets for.
    fn topics(&self) -> BTreeSet<String> {
        let mut topics: BTreeSet<String> = self
            .coordinator
            .offsets
            .group_offsets(&self.id)
            .into_keys()
            .map(|tp| tp.topic)
            .collect();
        let g = self.coordinator.group(&self.id);
        for m in g.lock().members.values() {
            topics.extend(m.topics.iter().cloned());
        }
        topics
    }

    /// The group's part of a metrics snapshot.
    pub(crate) fn metrics(&self) -> Result<GroupMetrics> {
        let partitions = self.lag()?;
        let (members, generation) = {
            let g = self.coordinator.group(&self.id);
            let g = g.lock();
            (g.members.len(), g.generation)
        };
        Ok(GroupMetrics {
            group: self.id.clone(),
            members,
            generation,
            total_lag: partitions.iter().map(|p| p.lag).sum(),
            partitions,
        })
    }

    /// Lag of every partition of the group's topics.
    pub fn lag(&self) -> Result<Vec<PartitionLag>> {
        let mut out = Vec::new();
        for topic in self.topics() {
            let Ok(parts) = self.source.partitions(&topic) else {
                continue; // deleted meanwhile
            };
            for (p, log) in parts.iter().enumerate() {
                let tp = TopicPartition::new(topic.clone(), p as u32);
                let committed = self.coordinator.offsets.committed(&self.id, &tp);
                let end_offset = log.end_offset();
                let from = committed.unwrap_or_else(|| log.start_offset());
                out.push(PartitionLag {
                    topic_partition: tp,
                    committed,
                    end_offset,
                    lag: end_offset.saturating_sub(from),
                });
            }
        }
        Ok(out)
    }

    /// Moves the committed offsets of `partitions` (all partitions of the
    /// group's topics if empty). Refused with [`Error::GroupNotEmpty`] while
    /// the group has members.
    pub fn reset_offsets(&self, partitions: &[TopicPartition], to: ResetTo) -> Result<()> {
        {
            let g = self.coordinator.group(&self.id);
            let mut g = g.lock();
            g.evict_expired(Instant::now());
            if !g.members.is_empty() {
                return Err(Error::GroupNotEmpty {
                    group: self.id.clone(),
                    members: g.members.len(),
                });
            }
        }
        let tps: Vec<TopicPartition> = if partitions.is_empty() {
            self.lag()?.into_iter().map(|l| l.topic_partition).collect()
        } else {
            partitions.to_vec()
        };
        let mut list = Vec::with_capacity(tps.len());
        for tp in tps {
            let log = self.source.partition(&tp)?;
            let (start, end) = (log.start_offset(), log.end_offset());
            let offset = match to {
                ResetTo::Earliest => start,
                ResetTo::Latest => end,
                ResetTo::Offset(o) if (start..=end).contains(&o) => o,
                ResetTo::Offset(o) => {
                    return Err(Error::OffsetOutOfRange {
                        topic: tp.topic.clone(),
                        partition: tp.partition,
                        offset: o,
                        start,
                        end,
                    })
                }
                ResetTo::Timestamp(ts) => log.offset_for_timestamp(ts)?.unwrap_or(end),
            };
            list.push((tp, Some(offset)));
        }
        self.coordinator.offsets.commit(&self.id, &list)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_ids_are_checked() {
        validate_group_id("billing").unwrap();
        for bad in ["", "a\nb", &"g".repeat(250)] {
            assert!(
                matches!(validate_group_id(bad), Err(Error::InvalidGroupId { .. })),
                "{bad:?}"
            );
        }
    }
}
