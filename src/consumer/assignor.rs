//! Partition assignment strategies for consumer groups.
//!
//! An assignor maps the group's members (each with its subscription) and
//! the partitions of the subscribed topics to a target assignment. Every
//! partition of a subscribed topic goes to exactly one member subscribed to
//! that topic. The group coordinator moves partitions towards the target
//! cooperatively: a partition changes hands only after its old owner gave it
//! up, so the target may be reached over several polls.

use std::collections::{BTreeMap, BTreeSet};

use crate::record::TopicPartition;

/// How a group splits partitions between its members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Assignor {
    /// Kafka's default `RangeAssignor`: per topic, members sorted by id get
    /// consecutive ranges; the first `partitions % members` get one extra.
    #[default]
    Range,
    /// Kafka's `RoundRobinAssignor`: all partitions, sorted, dealt to the
    /// members in turn (skipping members not subscribed to the topic).
    RoundRobin,
    /// Like Kafka's `CooperativeStickyAssignor`: balanced, keeping current
    /// owners and moving as few partitions as possible.
    CooperativeSticky,
}

/// A member as an assignor sees it.
#[derive(Debug, Clone)]
pub(crate) struct MemberInfo {
    pub id: String,
    pub topics: BTreeSet<String>,
    /// Partitions it owns now (used by the sticky assignor).
    pub owned: BTreeSet<TopicPartition>,
}

/// Target assignment: member id -> partitions.
pub(crate) type Assignment = BTreeMap<String, BTreeSet<TopicPartition>>;

impl Assignor {
    /// Computes the target assignment. `partitions` gives the partition
    /// count of every subscribed topic.
    pub(crate) fn assign(
        self,
        members: &[MemberInfo],
        partitions: &BTreeMap<String, u32>,
    ) -> Assignment {
        let mut out: Assignment = members
            .iter()
            .map(|m| (m.id.clone(), BTreeSet::new()))
            .collect();
        if members.is_empty() {
            return out;
        }
        match self {
            Assignor::Range => range(members, partitions, &mut out),
            Assignor::RoundRobin => round_robin(members, partitions, &mut out),
            Assignor::CooperativeSticky => sticky(members, partitions, &mut out),
        }
        out
    }
}

fn sorted_members(members: &[MemberInfo]) -> Vec<&MemberInfo> {
    let mut v: Vec<&MemberInfo> = members.iter().collect();
    v.sort_by(|a, b| a.id.cmp(&b.id));
    v
}

fn range(members: &[MemberInfo], partitions: &BTreeMap<String, u32>, out: &mut Assignment) {
    for (topic, &n) in partitions {
        let subscribed: Vec<&MemberInfo> = sorted_members(members)
            .into_iter()
            .filter(|m| m.topics.contains(topic))
            .collect();
        if subscribed.is_empty() {
            continue;
        }
        let m = subscribed.len() as u32;
        let (per, extra) = (n / m, n % m);
        for (i, member) in subscribed.iter().enumerate() {
            let i = i as u32;
            let start = i * per + i.min(extra);
            let len = per + u32::from(i < extra);
            let set = out.get_mut(&member.id).expect("member in output");
            set.extend((start..start + len).map(|p| TopicPartition::new(topic.clone(), p)));
        }
    }
}

fn round_robin(members: &[MemberInfo], partitions: &BTreeMap<String, u32>, out: &mut Assignment) {
    let sorted = sorted_members(members);
    let mut next = 0usize;
    for (topic, &n) in partitions {
        for p in 0..n {
            // The next member in turn that subscribes to this topic.
            for step in 0..sorted.len() {
                let m = sorted[(next + step) % sorted.len()];
                if m.topics.contains(topic) {
                    out.get_mut(&m.id)
                        .expect("member in output")
                        .insert(TopicPartition::new(topic.clone(), p));
                    next = (next + step + 1) % sorted.len();
                    break;
                }
            }
        }
    }
}

fn sticky(members: &[MemberInfo], partitions: &BTreeMap<String, u32>, out: &mut Assignment) {
    let all: BTreeSet<TopicPartition> = partitions
        .iter()
        .flat_map(|(t, &n)| (0..n).map(move |p| TopicPartition::new(t.clone(), p)))
        .collect();
    let eligible = |m: &MemberInfo, tp: &TopicPartition| m.topics.contains(&tp.topic);
    // 1. Keep what members own, if still valid and not claimed twice.
    let mut taken: BTreeSet<TopicPartition> = BTreeSet::new();
    for m in sorted_members(members) {
        for tp in &m.owned {
            if all.contains(tp) && eligible(m, tp) && taken.insert(tp.clone()) {
                out.get_mut(&m.id).expect("member").insert(tp.clone());
            }
        }
    }
    // 2. Quotas: floor or ceil of an even split; the extra slots go to the
    //    members that hold the most now, so fewer partitions move.
    let total = all.len();
    let n = members.len();
    let mut order: Vec<&MemberInfo> = sorted_members(members);
    order.sort_by_key(|m| std::cmp::Reverse(out[&m.id].len()));
    let quota: BTreeMap<&str, usize> = order
        .iter()
        .enumerate()
        .map(|(i, m)| (m.id.as_str(), total / n + usize::from(i < total % n)))
        .collect();
    // 3. Members over quota give up their highest partitions.
    let mut pool: BTreeSet<TopicPartition> = all.difference(&taken).cloned().collect();
    for m in members {
        let set = out.get_mut(&m.id).expect("member");
        while set.len() > quota[m.id.as_str()] {
            let tp = set.iter().next_back().cloned().expect("non-empty");
            set.remove(&tp);
            pool.insert(tp);
        }
    }
    // 4. Hand out the pool: to an eligible member under quota with the
    //    fewest partitions, else to the eligible member with the fewest.
    for tp in pool {
        let pick = |under_quota: bool| {
            members
                .iter()
                .filter(|m| eligible(m, &tp))
                .filter(|m| !under_quota || out[&m.id].len() < quota[m.id.as_str()])
                .min_by(|a, b| {
                    out[&a.id]
                        .len()
                        .cmp(&out[&b.id].len())
                        .then(a.id.cmp(&b.id))
                })
                .map(|m| m.id.clone())
        };
        if let Some(id) = pick(true).or_else(|| pick(false)) {
            out.get_mut(&id).expect("member").insert(tp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, topics: &[&str], owned: &[(&str, u32)]) -> MemberInfo {
        MemberInfo {
            id: id.into(),
            topics: topics.iter().map(|s| s.to_string()).collect(),
            owned: owned
                .iter()
                .map(|&(t, p)| TopicPartition::new(t, p))
                .collect(),
        }
    }

    fn parts(a: &Assignment, id: &str) -> Vec<String> {
        a[id].iter().map(|tp| tp.to_string()).collect()
    }

    fn topics(list: &[(&str, u32)]) -> BTreeMap<String, u32> {
        list.iter().map(|&(t, n)| (t.to_string(), n)).collect()
    }

    #[test]
    fn range_matches_kafkas_range_assignor() {
        // Kafka's documented example: t0, t1 with 3 partitions, C0 and C1.
        let ms = [
            member("C0", &["t0", "t1"], &[]),
            member("C1", &["t0", "t1"], &[]),
        ];
        let a = Assignor::Range.assign(&ms, &topics(&[("t0", 3), ("t1", 3)]));
        assert_eq!(parts(&a, "C0"), ["t0-0", "t0-1", "t1-0", "t1-1"]);
        assert_eq!(parts(&a, "C1"), ["t0-2", "t1-2"]);
    }

    #[test]
    fn round_robin_matches_kafkas_round_robin_assignor() {
        let ms = [
            member("C0", &["t0", "t1"], &[]),
            member("C1", &["t0", "t1"], &[]),
        ];
        let a = Assignor::RoundRobin.assign(&ms, &topics(&[("t0", 3), ("t1", 3)]));
        assert_eq!(parts(&a, "C0"), ["t0-0", "t0-2", "t1-1"]);
        assert_eq!(parts(&a, "C1"), ["t0-1", "t1-0", "t1-2"]);
    }

    #[test]
    fn three_members_split_twelve_partitions_evenly() {
        for assignor in [
            Assignor::Range,
            Assignor::RoundRobin,
            Assignor::CooperativeSticky,
        ] {
            let ms = [
                member("a", &["t"], &[]),
                member("b", &["t"], &[]),
                member("c", &["t"], &[]),
            ];
            let a = assignor.assign(&ms, &topics(&[("t", 12)]));
            let total: usize = a.values().map(|s| s.len()).sum();
            assert_eq!(total, 12, "{assignor:?}");
            assert!(a.values().all(|s| s.len() == 4), "{assignor:?}: {a:?}");
        }
    }

    #[test]
    fn sticky_moves_only_what_it_must_when_a_member_joins() {
        // a owns 0-5, b owns 6-11; c joins: 4 partitions must move, 2 from each.
        let a_owned: Vec<_> = (0..6).map(|p| ("t", p)).collect();
        let b_owned: Vec<_> = (6..12).map(|p| ("t", p)).collect();
        let ms = [
            member("a", &["t"], &a_owned),
            member("b", &["t"], &b_owned),
            member("c", &["t"], &[]),
        ];
        let a = Assignor::CooperativeSticky.assign(&ms, &topics(&[("t", 12)]));
        assert_eq!(a["a"].len(), 4);
        assert_eq!(a["b"].len(), 4);
        assert_eq!(a["c"].len(), 4);
        let kept = |id: &str, owned: &[(&str, u32)]| {
            owned
                .iter()
                .filter(|&&(t, p)| a[id].contains(&TopicPartition::new(t, p)))
                .count()
        };
        assert_eq!(kept("a", &a_owned), 4, "a keeps 4 of its 6");
        assert_eq!(kept("b", &b_owned), 4, "b keeps 4 of its 6");
    }

    #[test]
    fn sticky_keeps_everything_when_a_member_leaves_and_spreads_its_partitions() {
        let ms = [
            member("a", &["t"], &[("t", 0), ("t", 1), ("t", 2)]),
            member("b", &["t"], &[("t", 3), ("t", 4), ("t", 5)]),
        ];
        // c (which owned 6-8) left.
        let a = Assignor::CooperativeSticky.assign(&ms, &topics(&[("t", 9)]));
        assert!((0..3).all(|p| a["a"].contains(&TopicPartition::new("t", p))));
        assert!((3..6).all(|p| a["b"].contains(&TopicPartition::new("t", p))));
        assert_eq!(a["a"].len() + a["b"].len(), 9);
        assert!(a["a"].len().abs_diff(a["b"].len()) <= 1);
    }

    #[test]
    fn partitions_only_go_to_subscribers() {
        for assignor in [
            Assignor::Range,
            Assignor::RoundRobin,
            Assignor::CooperativeSticky,
        ] {
            let ms = [member("a", &["x"], &[]), member("b", &["y"], &[])];
            let a = assignor.assign(&ms, &topics(&[("x", 2), ("y", 3)]));
            assert!(a["a"].iter().all(|tp| tp.topic == "x"), "{assignor:?}");
            assert!(a["b"].iter().all(|tp| tp.topic == "y"), "{assignor:?}");
            assert_eq!(a["a"].len() + a["b"].len(), 5, "{assignor:?}");
        }
    }
}
