//! One replicated partition: its replicas, leader, ISR and high watermark,
//! and the steps that move it — a follower's fetch, the leader's ISR and
//! high-watermark bookkeeping, an election, an append's acknowledgement.
//!
//! Every step is a plain function call under the partition's lock, with
//! no sleeps and no threads of its own: the cluster's background thread
//! calls them in a loop, and the deterministic simulation (`sim.rs`) calls
//! them one at a time in an order a seeded random generator picks.
//!
//! # What each replica believes, and what is true
//!
//! The *truth* (`leader`, `epoch`, `isr`) is what the controller decided
//! and recorded in `cluster.json`. Each replica also keeps its own *view*
//! (the leader and epoch the controller last told it): a broker cut off
//! from the others (`isolate_broker`) keeps an old view and may still
//! believe it leads. Followers fetch from the leader of their view, and a
//! leader serves only followers of its own epoch, so a stale leader gets
//! no fetches: its high watermark cannot move, and nothing it writes is
//! acknowledged with `Acks::All`. An acknowledgement also requires that the
//! broker the record was written to is still the leader of the same epoch.
//!
//! # Divergence (KIP-101 / KIP-279)
//!
//! Every batch carries the leader epoch it was written in, and each
//! replica's leader-epoch cache maps epochs to their first offsets. A
//! follower of a new epoch first finds the largest epoch both it and the
//! leader hold, and truncates to the smaller of the two end offsets of that
//! epoch (the start of the next epoch, or the log end): below that point
//! both logs hold the batches the leader of that epoch wrote, byte for
//! byte, so replicas never diverge below anyone's high watermark.
//!
//! # High watermark
//!
//! The leader's high watermark is the smallest log end offset in the ISR
//! (its own included), and it only grows. A follower joins the ISR when its
//! log end reaches the high watermark; it leaves when it has not caught up
//! with the leader's log end for `replica_lag_time_max`, or its broker
//! stops or is cut off. A leader is elected from the ISR only (unless the
//! topic enables unclean election), so a new leader holds every record
//! below the high watermark, and the high watermark carries over. Readers
//! of a replica see offsets below its high watermark only.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::error::{Error, Result};
use crate::storage::{Limits, PartitionLog};

/// Most bytes one fetch copies.
pub(crate) const FETCH_MAX_BYTES: usize = 1 << 20;

/// How a record is acknowledged on a cluster (Kafka's producer `acks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Acks {
    /// Return once the leader wrote the record, without checking anything
    /// after (Kafka's `acks=0`).
    None,
    /// Return once the leader wrote the record (`acks=1`): a failover
    /// before followers copy it loses it.
    Leader,
    /// Return once every in-sync replica has the record (`acks=all`, the
    /// default, as in Kafka 3): refused with
    /// [`Error::NotEnoughReplicas`] when the ISR is smaller than the
    /// topic's `min_insync_replicas`.
    #[default]
    All,
}

/// Which brokers run and can reach each other.
pub(crate) trait Network {
    /// Broker `b` runs.
    fn alive(&self, b: u32) -> bool;
    /// `a` and `b` run and can talk (a broker always reaches itself).
    fn reachable(&self, a: u32, b: u32) -> bool;
}

/// One replica of a partition on one broker.
#[derive(Debug)]
pub(crate) struct Slot {
    pub broker: u32,
    /// `None` while the broker is stopped.
    pub log: Option<Arc<PartitionLog>>,
    /// The leader and epoch this replica was last told about.
    pub view_leader: Option<u32>,
    pub view_epoch: i32,
    /// The epoch this replica reconciled its log with (truncated to the
    /// divergence point); a follower does that before its first fetch of
    /// an epoch.
    pub synced_epoch: i32,
    /// As the leader knows it: this replica's log end offset...
    pub leo: u64,
    /// ...and when it was last caught up with the leader's log end.
    pub caught_up: u64,
}

/// The replicated state of one partition (under [`Part::st`]).
#[derive(Debug)]
pub(crate) struct PartState {
    /// Assignment order; the first is the preferred leader.
    pub slots: Vec<Slot>,
    pub leader: Option<u32>,
    pub epoch: i32,
    pub isr: Vec<u32>,
    pub hw: u64,
}

impl PartState {
    pub(crate) fn slot(&self, b: u32) -> Option<&Slot> {
        self.slots.iter().find(|s| s.broker == b)
    }

    fn slot_mut(&mut self, b: u32) -> Option<&mut Slot> {
        self.slots.iter_mut().find(|s| s.broker == b)
    }

    pub(crate) fn replicas(&self) -> Vec<u32> {
        self.slots.iter().map(|s| s.broker).collect()
    }

    /// The leader's log, if there is a leader with its log open.
    pub(crate) fn leader_log(&self) -> Option<&Arc<PartitionLog>> {
        self.slot(self.leader?)?.log.as_ref()
    }
}

/// What an append wrote to: the leader's log, in an epoch.
#[derive(Debug, Clone)]
pub(crate) struct Ticket {
    pub log: Arc<PartitionLog>,
    pub broker: u32,
    pub epoch: i32,
}

/// One replicated partition.
#[derive(Debug)]
pub(crate) struct Part {
    pub topic: Arc<str>,
    pub partition: u32,
    pub limits: Limits,
    pub min_isr: usize,
    pub unclean: bool,
    pub st: Mutex<PartState>,
    /// Rung when the high watermark, leader or ISR changes.
    cv: Condvar,
}

/// What changed in a step (the caller persists metadata and refreshes
/// routes when the truth changed).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Changed {
    /// Leader, epoch or ISR.
    pub truth: bool,
    /// Bytes were copied.
    pub moved: bool,
}

impl Part {
    pub(crate) fn new(
        topic: Arc<str>,
        partition: u32,
        limits: Limits,
        min_isr: usize,
        unclean: bool,
        st: PartState,
    ) -> Part {
        Part {
            topic,
            partition,
            limits,
            min_isr,
            unclean,
            st: Mutex::new(st),
            cv: Condvar::new(),
        }
    }

    fn no_leader(&self) -> Error {
        Error::NoLeader {
            topic: self.topic.to_string(),
            partition: self.partition,
        }
    }

    fn not_enough(&self, isr: usize) -> Error {
        Error::NotEnoughReplicas {
            topic: self.topic.to_string(),
            partition: self.partition,
            isr,
            min: self.min_isr,
        }
    }

    /// The current leader's log, for an append with `acks`.
    pub(crate) fn route(&self, acks: Acks) -> Result<Ticket> {
        let st = self.st.lock();
        let leader = st.leader.ok_or_else(|| self.no_leader())?;
        let log = st.leader_log().cloned().ok_or_else(|| self.no_leader())?;
        // A leader the controller has not reached yet (restarted while cut
        // off) does not know it leads: its log would stamp no epoch on the
        // batch, and followers could not find where they diverge. It
        // refuses, as a Kafka broker does (NOT_LEADER_OR_FOLLOWER).
        let view = st.slot(leader).map(|s| (s.view_leader, s.view_epoch));
        if view != Some((Some(leader), st.epoch)) {
            return Err(Error::NotLeader {
                topic: self.topic.to_string(),
                partition: self.partition,
                broker: leader,
                epoch: view.map_or(-1, |v| v.1),
            });
        }
        if acks == Acks::All && st.isr.len() < self.min_isr {
            return Err(self.not_enough(st.isr.len()));
        }
        Ok(Ticket {
            log,
            broker: leader,
            epoch: st.epoch,
        })
    }

    /// An append through broker `b`, if `b` believes it leads.
    pub(crate) fn ticket_via(&self, b: u32) -> Result<Ticket> {
        let st = self.st.lock();
        let s = st.slot(b).filter(|s| s.view_leader == Some(b));
        match s.and_then(|s| s.log.clone().map(|l| (l, s.view_epoch))) {
            Some((log, epoch)) => Ok(Ticket {
                log,
                broker: b,
                epoch,
            }),
            None => Err(Error::NotLeader {
                topic: self.topic.to_string(),
                partition: self.partition,
                broker: b,
                epoch: st.slot(b).map_or(-1, |s| s.view_epoch),
            }),
        }
    }

    /// The log readers should use: the leader's, else any open replica's.
    pub(crate) fn read_log(&self) -> Option<Arc<PartitionLog>> {
        let st = self.st.lock();
        st.leader_log()
            .or_else(|| st.slots.iter().find_map(|s| s.log.as_ref()))
            .cloned()
    }

    /// Waits until a record written through `t`, ending before `end`, is
    /// acknowledged under `acks` (see the module docs).
    pub(crate) fn acknowledge(
        &self,
        t: &Ticket,
        end: u64,
        acks: Acks,
        timeout: Duration,
    ) -> Result<()> {
        let mut st = self.st.lock();
        self.advance_hw(&mut st);
        if acks != Acks::All {
            return Ok(());
        }
        let deadline = Instant::now() + timeout;
        loop {
            match self.ack_state(&st, t, end) {
                Some(r) => return r,
                None => {
                    if self.cv.wait_until(&mut st, deadline).timed_out() {
                        return self.ack_state(&st, t, end).unwrap_or_else(|| {
                            Err(Error::Timeout {
                                topic: self.topic.to_string(),
                                partition: self.partition,
                                offset: end.saturating_sub(1),
                                timeout_ms: timeout.as_millis() as u64,
                            })
                        });
                    }
                }
            }
        }
    }

    /// `Some(Ok)` once acknowledged with `Acks::All`, `Some(Err)` once it
    /// never will be, `None` while pending.
    pub(crate) fn ack_state(&self, st: &PartState, t: &Ticket, end: u64) -> Option<Result<()>> {
        if st.leader != Some(t.broker) || st.epoch != t.epoch {
            return Some(Err(Error::NotLeader {
                topic: self.topic.to_string(),
                partition: self.partition,
                broker: t.broker,
                epoch: t.epoch,
            }));
        }
        // A high watermark that moved with too small an ISR covers fewer
        // copies than `min_insync_replicas` promises (Kafka's
        // NOT_ENOUGH_REPLICAS_AFTER_APPEND).
        if st.isr.len() < self.min_isr {
            return Some(Err(self.not_enough(st.isr.len())));
        }
        if st.hw >= end {
            return Some(Ok(()));
        }
        None
    }

    /// Moves the high watermark up to the smallest log end in the ISR.
    pub(crate) fn advance_hw(&self, st: &mut PartState) {
        let Some(leader) = st.leader else { return };
        let Some(log) = st.leader_log().cloned() else {
            return;
        };
        let mut low = log.log_end_offset();
        for &b in &st.isr {
            if b != leader {
                low = low.min(st.slot(b).map_or(0, |s| s.leo));
            }
        }
        if low > st.hw {
            st.hw = low;
            log.set_visible_end(low);
            self.cv.notify_all();
        }
    }

    /// One fetch of follower `f` from the leader it believes in: reconcile
    /// its log with a new epoch first, then copy what the leader has, then
    /// the leader's bookkeeping (follower position, ISR, high watermark).
    /// With `durable` (`SyncPolicy::Always`), what the follower copied is
    /// fsynced before its new end counts toward the ISR and the high
    /// watermark, as the leader's own appends are before they are
    /// acknowledged; a failed fsync fails the fetch, so the follower stays
    /// where it was.
    pub(crate) fn fetch(
        &self,
        f: u32,
        net: &dyn Network,
        now: u64,
        durable: bool,
    ) -> Result<Changed> {
        let mut st = self.st.lock();
        let mut changed = Changed::default();
        let Some(fs) = st.slot(f) else {
            return Ok(changed);
        };
        let (Some(flog), Some(l)) = (fs.log.clone(), fs.view_leader) else {
            return Ok(changed);
        };
        let epoch = fs.view_epoch;
        if l == f || !net.reachable(f, l) {
            return Ok(changed);
        }
        let Some(ls) = st.slot(l) else {
            return Ok(changed);
        };
        // The leader serves followers of its own epoch only.
        let Some(llog) = ls
            .log
            .clone()
            .filter(|_| ls.view_leader == Some(l) && ls.view_epoch == epoch)
        else {
            return Ok(changed);
        };
        if fs.synced_epoch != epoch {
            let follower_end = flog.log_end_offset();
            let point = divergence(
                &llog.epochs(),
                llog.log_end_offset(),
                &flog.epochs(),
                follower_end,
            );
            let end = flog.truncate_to(point)?;
            if end < follower_end {
                tracing::warn!(
                    topic = %self.topic,
                    partition = self.partition,
                    broker = f,
                    leader = l,
                    leader_epoch = epoch,
                    from = follower_end,
                    to = end,
                    "follower truncated records that diverged from the leader's log"
                );
            }
            let fs = st.slot_mut(f).expect("checked");
            fs.synced_epoch = epoch;
        }
        let mut from = flog.log_end_offset();
        let leader_end = llog.log_end_offset();
        if from > leader_end {
            // Only after an unclean election: the follower holds more than
            // the leader and has no common epoch to cut at.
            tracing::warn!(
                topic = %self.topic,
                partition = self.partition,
                broker = f,
                leader = l,
                from,
                to = leader_end,
                "follower truncated records beyond the leader's end (after an unclean election)"
            );
            flog.truncate_to(leader_end)?;
            from = flog.log_end_offset();
        }
        if from < leader_end {
            let start = llog.start_offset();
            if from < start {
                // Retention on the leader overtook this follower: start over
                // at the leader's start (Kafka's truncate-fully-and-start-at).
                flog.start_over_at(start)?;
                from = start;
            }
            let bytes = llog.read_batches(from, FETCH_MAX_BYTES)?;
            if let Some(base) = first_base(&bytes).filter(|&b| b < from) {
                // A compacted leader batch straddles the follower's end.
                flog.truncate_to(base)?;
            }
            if !bytes.is_empty() {
                flog.append_batches(&bytes)?;
                changed.moved = true;
            }
        }
        if durable {
            // Also when nothing was copied now: a copy whose fsync failed
            // in an earlier fetch. (Nothing to do costs a load.)
            flog.sync()?;
        }
        let leo = flog.log_end_offset();
        flog.trim_below(llog.start_offset())?;
        // The leader's side.
        let truth_leader = st.leader == Some(l) && st.epoch == epoch;
        let hw = st.hw;
        let fs = st.slot_mut(f).expect("checked");
        fs.leo = leo;
        if leo >= leader_end {
            fs.caught_up = now;
        }
        if truth_leader {
            if !st.isr.contains(&f) && leo >= hw {
                st.isr.push(f);
                tracing::info!(
                    topic = %self.topic,
                    partition = self.partition,
                    broker = f,
                    isr = ?st.isr,
                    "ISR expanded: replica caught up"
                );
                changed.truth = true;
                self.cv.notify_all();
            }
            self.advance_hw(&mut st);
        }
        flog.set_visible_end(st.hw.min(leo));
        Ok(changed)
    }

    /// Removes from the ISR followers that are gone, cut off from the
    /// leader, or have lagged for longer than `lag_max`. The high
    /// watermark is not moved here: the caller records the smaller ISR
    /// first, then calls [`advance_hw`](Self::advance_hw).
    pub(crate) fn shrink_isr(&self, net: &dyn Network, now: u64, lag_max: u64) -> bool {
        let mut st = self.st.lock();
        let Some(l) = st.leader else { return false };
        let before = st.isr.len();
        let slots: Vec<(u32, u64)> = st.slots.iter().map(|s| (s.broker, s.caught_up)).collect();
        st.isr.retain(|&b| {
            b == l || {
                let caught = slots.iter().find(|s| s.0 == b).map_or(0, |s| s.1);
                net.reachable(l, b) && now.saturating_sub(caught) <= lag_max
            }
        });
        let changed = st.isr.len() != before;
        if changed {
            tracing::warn!(
                topic = %self.topic,
                partition = self.partition,
                leader = l,
                isr = ?st.isr,
                lag_max_ms = lag_max,
                "ISR shrunk: followers lagged, stopped or were cut off"
            );
            self.cv.notify_all();
        }
        changed
    }

    /// Takes broker `b` out of the ISR (it stopped or was cut off), unless
    /// it is the last member: then it keeps its place, so that it can lead
    /// again cleanly when it returns (as in Kafka).
    pub(crate) fn drop_from_isr(&self, b: u32) -> bool {
        let mut st = self.st.lock();
        if st.isr.len() > 1 && st.isr.contains(&b) {
            st.isr.retain(|&x| x != b);
            tracing::info!(
                topic = %self.topic,
                partition = self.partition,
                broker = b,
                isr = ?st.isr,
                "ISR shrunk: broker went away"
            );
            self.cv.notify_all();
            return true;
        }
        false
    }

    /// Elects a leader if the partition needs one: none now, or the leader
    /// cannot serve (`net`), or `preferred` asks to move leadership to the
    /// first replica when it is in sync. The controller `controller`
    /// tells every replica it reaches. Returns whether the truth changed.
    pub(crate) fn elect(
        &self,
        net: &dyn Network,
        controller: u32,
        preferred: bool,
        now: u64,
    ) -> bool {
        let mut st = self.st.lock();
        let serving = |b: u32| net.alive(b) && net.reachable(controller, b);
        let leader_ok = st.leader.is_some_and(serving);
        let first = st.slots[0].broker;
        let move_to_preferred = preferred
            && leader_ok
            && st.leader != Some(first)
            && st.isr.contains(&first)
            && serving(first);
        if leader_ok && !move_to_preferred {
            return false;
        }
        // Clean candidates: in-sync replicas that run, in assignment order.
        let mut candidate = st.slots.iter().map(|s| s.broker).find(|&b| {
            st.isr.contains(&b) && serving(b) && st.slot(b).is_some_and(|s| s.log.is_some())
        });
        let mut unclean = false;
        if candidate.is_none() && self.unclean {
            // Any replica that runs, the one with the most data first.
            candidate = st
                .slots
                .iter()
                .filter(|s| serving(s.broker) && s.log.is_some())
                .max_by_key(|s| s.log.as_ref().map_or(0, |l| l.log_end_offset()))
                .map(|s| s.broker);
            unclean = candidate.is_some();
        }
        if candidate == st.leader && leader_ok {
            return false;
        }
        if candidate.is_none() && st.leader.is_none() {
            return false;
        }
        let previous = st.leader;
        st.epoch += 1;
        st.leader = candidate;
        match candidate {
            None => tracing::warn!(
                topic = %self.topic,
                partition = self.partition,
                previous,
                leader_epoch = st.epoch,
                "partition has no leader: no eligible replica runs"
            ),
            Some(new) if unclean => tracing::warn!(
                topic = %self.topic,
                partition = self.partition,
                leader = new,
                previous,
                leader_epoch = st.epoch,
                "unclean leader election: records not on the new leader are lost"
            ),
            Some(new) => tracing::info!(
                topic = %self.topic,
                partition = self.partition,
                leader = new,
                previous,
                leader_epoch = st.epoch,
                preferred = move_to_preferred,
                "leader elected"
            ),
        }
        if let Some(new) = candidate {
            if unclean {
                // The new leader's log is the truth now: records above it
                // are lost, and the high watermark follows it down.
                st.isr = vec![new];
                let end = st
                    .slot(new)
                    .and_then(|s| s.log.as_ref())
                    .map_or(0, |l| l.log_end_offset());
                st.hw = st.hw.min(end);
            } else if !st.isr.contains(&new) {
                st.isr.push(new);
            }
        }
        self.inform(&mut st, net, controller, now);
        self.cv.notify_all();
        true
    }

    /// The controller tells every replica it reaches the current leader and
    /// epoch; a new leader stamps its epoch on later batches.
    pub(crate) fn inform(&self, st: &mut PartState, net: &dyn Network, controller: u32, now: u64) {
        let leader = st.leader;
        let epoch = st.epoch;
        let hw = st.hw;
        for s in st.slots.iter_mut() {
            if !net.reachable(controller, s.broker) {
                continue;
            }
            if s.view_epoch == epoch && s.view_leader == leader {
                continue;
            }
            s.view_leader = leader;
            s.view_epoch = epoch;
            // Followers' positions are unknown until they fetch again, and
            // a new leader gives them a fresh lag allowance.
            s.leo = 0;
            s.caught_up = now;
            if leader == Some(s.broker) {
                s.synced_epoch = epoch;
                if let Some(log) = &s.log {
                    log.set_leader_epoch(epoch);
                    log.set_visible_end(hw);
                }
            }
        }
    }
}

/// Where a follower must cut its log to agree with the leader (see the
/// module docs): the smaller end offset of the largest epoch both hold.
pub(crate) fn divergence(
    leader: &[(i32, u64)],
    leader_end: u64,
    follower: &[(i32, u64)],
    follower_end: u64,
) -> u64 {
    let end_of = |cache: &[(i32, u64)], i: usize, end: u64| cache.get(i + 1).map_or(end, |e| e.1);
    for (fi, &(e, _)) in follower.iter().enumerate().rev() {
        if let Ok(li) = leader.binary_search_by_key(&e, |x| x.0) {
            return end_of(leader, li, leader_end).min(end_of(follower, fi, follower_end));
        }
    }
    // No common epoch: only what precedes both logs' first epochs agrees.
    let first = |cache: &[(i32, u64)], end: u64| cache.first().map_or(end, |e| e.1);
    first(leader, leader_end)
        .min(first(follower, follower_end))
        .min(follower_end)
}

fn first_base(bytes: &[u8]) -> Option<u64> {
    (bytes.len() >= 8).then(|| i64::from_be_bytes(bytes[..8].try_into().expect("8 bytes")) as u64)
}

#[cfg(test)]
mod tests {
    use super::divergence;

    #[test]
    fn divergence_cuts_at_the_largest_common_epoch() {
        // Same history: nothing to cut beyond the shorter log.
        assert_eq!(
            divergence(&[(0, 0), (1, 10)], 20, &[(0, 0), (1, 10)], 15),
            15
        );
        assert_eq!(
            divergence(&[(0, 0), (1, 10)], 20, &[(0, 0), (1, 10)], 25),
            20
        );
        // The follower led epoch 2 alone; the leader went on in epoch 3.
        assert_eq!(
            divergence(
                &[(0, 0), (1, 10), (3, 12)],
                30,
                &[(0, 0), (1, 10), (2, 14)],
                18
            ),
            12
        );
        // KIP-279's case: the follower's epoch 1 ends later than the leader's.
        assert_eq!(
            divergence(&[(0, 0), (1, 10), (2, 11)], 20, &[(0, 0), (1, 10)], 13),
            11
        );
        // Empty follower, empty leader.
        assert_eq!(divergence(&[(0, 0)], 5, &[], 0), 0);
        assert_eq!(divergence(&[], 0, &[(0, 0)], 5), 0);
    }
}
