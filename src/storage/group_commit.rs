//! Group commit: the bookkeeping that lets concurrent durable appenders share
//! one fsync.
//!
//! One caller of [`PartitionLog::sync_to`](super::partition_log) becomes the
//! *leader* (it holds the partition's sync lock) and fsyncs; the others are
//! *followers*, asleep here until a round ends, all woken at once (handing
//! them the sync lock one by one would put a wake-up per follower between
//! two fsyncs).
//!
//! Waking all followers at once is not enough on its own. Each of them
//! returns to its caller, appends again and comes back; the first one back
//! leads the next fsync at once, covering its own record only, while the
//! rest pile up behind it. Rounds then alternate between one record and all
//! the others, and 16 appenders shared an fsync between 3 or 4 of them on
//! average. So a leader first *gathers*: it waits until as many callers
//! wait for the round as shared the previous fsync (the group size), or for
//! at most the previous fsync's duration, whichever comes first. A lone
//! appender has a group of one and never waits; a group that shrinks (an
//! appender stops) costs one round of patience, after which the size
//! follows what was seen.
//!
//! Waiting is spun before it sleeps. A follower asleep on a condition
//! variable costs a wake-up when its round ends, and with every appender
//! asleep during an fsync the CPUs go idle: here (a VM without guest halt
//! polling) waking an idle CPU goes through the host, and 16 followers
//! woken that way put 126 µs between two 197 µs fsyncs. So a follower
//! first counts itself in (the gathering leader sees it at once), then
//! polls the round, yielding the CPU between polls, for up to twice the
//! last fsync's duration, and sleeps only if the round has not ended by
//! then; a gathering leader polls its group the same way.
//!
//! Polling pays only where an fsync is short beside a wake-up: after an
//! fsync longer than [`MAX_POLLED_FSYNC`] (a spinning disk, network
//! storage) nobody polls, and a caller polls in its first wait only
//! (`poll` of [`wait`](GroupCommit::wait)), so a sync lock held for long
//! by something else than an fsync costs no CPU either.
//!
//! `cargo bench --bench compare -- --only=5 --quick` measured 16 durable
//! appenders at 58–77 k/s against 40–57 k/s asleep in three alternating
//! pairs of runs (the gap between fsyncs down to about 50 µs), and at
//! 36–45 against 32–35 k/s in three more pairs while the disk's fsyncs
//! took 200–320 µs. The price is CPU: followers keep the CPUs busy,
//! yielding, while an fsync they wait for is in flight. A lone appender is
//! its own leader, never a follower, and never polls.
//!
//! Nobody is notified who is not asleep: a condition variable's
//! notification is a system call even with nobody waiting, and with every
//! follower polling, the one per arrival and the one per round ending came
//! to 16 `futex` calls per fsync of 16 appenders. Counting the sleepers
//! took that to 0.2 per fsync, and 16 appenders (`prof`-style scratch
//! loop, seven alternating pairs of 2–3 s) from a median of 92.3 to 97.5
//! k/s; their fsyncs got shorter too (less CPU contention in the kernel's
//! part of them).
//!
//! Lock order: the mutex here is taken with no other lock held, except by
//! a leader, which holds the sync lock (never the partition's state lock)
//! while it gathers and ends a round.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Longest a leader waits for its group, whatever the last fsync took.
const MAX_PATIENCE: Duration = Duration::from_millis(2);
/// After an fsync longer than this, followers and leaders sleep at once.
const MAX_POLLED_FSYNC: Duration = Duration::from_micros(500);

#[derive(Debug, Default)]
struct Round {
    /// Rounds ended so far.
    done: u64,
    /// Followers asleep until round `done` ends.
    waiting: usize,
    /// Callers (leader and followers) the last fsync covered.
    group: usize,
    /// How long the last fsync took.
    last_fsync: Duration,
    /// Followers asleep on `ended`: `end` wakes them only if there are
    /// any (a notification costs a system call even with nobody to wake).
    asleep: usize,
    /// Whether a gathering leader is asleep on `joined`, for the same
    /// reason.
    leader_asleep: bool,
}

/// See the module docs.
#[derive(Debug)]
pub(crate) struct GroupCommit {
    round: Mutex<Round>,
    /// Longest a leader gathers ([`MAX_PATIENCE`]; tests set it).
    max_patience: Duration,
    /// Followers sleep here until `done` moves.
    ended: Condvar,
    /// A gathering leader sleeps here; a follower arriving wakes it.
    joined: Condvar,
    /// `Round::done`, for followers polling without the lock.
    done: AtomicU64,
    /// `Round::waiting`, for a leader polling without the lock.
    waiting: AtomicUsize,
    /// How long followers poll before they sleep, in nanoseconds: twice
    /// the last fsync's duration, or 0 after one longer than
    /// `max_polled_fsync`.
    spin_ns: AtomicU64,
    /// [`MAX_POLLED_FSYNC`]; tests set it.
    max_polled_fsync: Duration,
}

impl Default for GroupCommit {
    fn default() -> Self {
        GroupCommit {
            round: Mutex::default(),
            max_patience: MAX_PATIENCE,
            max_polled_fsync: MAX_POLLED_FSYNC,
            ended: Condvar::new(),
            joined: Condvar::new(),
            done: AtomicU64::new(0),
            waiting: AtomicUsize::new(0),
            spin_ns: AtomicU64::new(0),
        }
    }
}

impl GroupCommit {
    fn lock(&self) -> MutexGuard<'_, Round> {
        // The counters stay consistent whatever panicked while holding it.
        self.round.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current round, to pass to [`wait`](Self::wait).
    pub(crate) fn current(&self) -> u64 {
        self.lock().done
    }

    /// As a follower: waits until round `seen` ends (or `timeout` passes;
    /// the sync lock may be held by something other than an fsync, which
    /// ends no round): asleep, after polling first if `poll` (see the
    /// module docs).
    pub(crate) fn wait(&self, seen: u64, timeout: Duration, poll: bool) {
        let started = Instant::now();
        let mut round = self.lock();
        if round.done != seen {
            return;
        }
        round.waiting += 1;
        self.waiting.store(round.waiting, Ordering::Release);
        if round.leader_asleep {
            self.joined.notify_one();
        }
        drop(round);
        let spin = if poll {
            Duration::from_nanos(self.spin_ns.load(Ordering::Relaxed)).min(timeout)
        } else {
            Duration::ZERO
        };
        if poll_until(spin, || self.done.load(Ordering::Acquire) != seen) {
            // `end` already let go of this follower.
            return;
        }
        let mut round = self.lock();
        let rest = timeout.saturating_sub(started.elapsed());
        round.asleep += 1;
        let (mut round, _) = self
            .ended
            .wait_timeout_while(round, rest, |r| r.done == seen)
            .unwrap_or_else(|e| e.into_inner());
        round.asleep -= 1;
        // When the round ended, `end` already let go of this follower.
        if round.done == seen {
            round.waiting -= 1;
            self.waiting.store(round.waiting, Ordering::Release);
        }
    }

    /// As the leader, before sealing what the fsync will cover: waits until
    /// the last round's group is back (or its patience runs out). Returns
    /// how many callers the fsync will cover.
    pub(crate) fn gather(&self) -> usize {
        let started = Instant::now();
        let round = self.lock();
        let expected = round.group;
        let patience = round.last_fsync.min(self.max_patience);
        let polled = if self.polls_after(round.last_fsync) {
            patience
        } else {
            Duration::ZERO
        };
        drop(round);
        poll_until(polled, || {
            self.waiting.load(Ordering::Acquire) + 1 >= expected
        });
        let mut round = self.lock();
        let rest = patience.saturating_sub(started.elapsed());
        round.leader_asleep = true;
        let (mut round, _) = self
            .joined
            .wait_timeout_while(round, rest, |r| r.waiting + 1 < expected)
            .unwrap_or_else(|e| e.into_inner());
        round.leader_asleep = false;
        round.group = round.waiting + 1;
        round.group
    }

    /// As the leader, after the fsync (still holding the sync lock, so the
    /// next leader gathers a fresh round): ends the round and wakes every
    /// follower.
    pub(crate) fn end(&self, started: Instant) {
        if self.publish_end(started) {
            self.ended.notify_all();
        }
    }

    /// Whether waiting polls after an fsync that took `fsync` (see the
    /// module docs).
    fn polls_after(&self, fsync: Duration) -> bool {
        fsync <= self.max_polled_fsync
    }

    /// [`end`](Self::end) but for waking the sleeping followers: what
    /// polling followers see. Returns whether any follower is asleep (one
    /// that goes to sleep later finds the round ended without sleeping).
    fn publish_end(&self, started: Instant) -> bool {
        let mut round = self.lock();
        round.done += 1;
        round.waiting = 0;
        round.last_fsync = started.elapsed();
        let spin = if self.polls_after(round.last_fsync) {
            2 * round.last_fsync
        } else {
            Duration::ZERO
        };
        self.spin_ns
            .store(spin.as_nanos() as u64, Ordering::Relaxed);
        self.waiting.store(0, Ordering::Release);
        self.done.store(round.done, Ordering::Release);
        round.asleep > 0
    }
}

/// Polls `done`, yielding the CPU between polls, for up to `limit`;
/// whether it came true.
fn poll_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    loop {
        if done() {
            return true;
        }
        if started.elapsed() >= limit {
            return false;
        }
        std::thread::yield_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::thread;

    /// Patience long enough that a test can tell waiting from not waiting
    /// whatever else the machine is doing.
    const LONG: Duration = Duration::from_secs(3);

    fn patient() -> GroupCommit {
        GroupCommit {
            max_patience: LONG,
            ..GroupCommit::default()
        }
    }

    #[test]
    fn a_lone_leader_never_waits() {
        let gc = patient();
        for _ in 0..3 {
            assert_eq!(gc.gather(), 1);
            // A slow "fsync": a leader that waited would wait this long.
            gc.end(Instant::now() - 2 * LONG);
        }
        let started = Instant::now();
        assert_eq!(gc.gather(), 1);
        assert!(started.elapsed() < LONG, "no wait");
    }

    #[test]
    fn a_leader_waits_for_the_last_group_to_come_back() {
        let gc = Arc::new(patient());
        // Round 0: four followers wait; the leader's fsync covers all five.
        let seen = gc.current();
        let followers: Vec<_> = (0..4)
            .map(|_| {
                let gc = Arc::clone(&gc);
                thread::spawn(move || gc.wait(seen, 10 * LONG, true))
            })
            .collect();
        while gc.lock().waiting < 4 {
            thread::yield_now();
        }
        assert_eq!(gc.gather(), 5);
        // The followers poll nothing yet (no fsync has ended): they sleep,
        // and `end` must wake them.
        let ended = Instant::now();
        gc.end(Instant::now() - 2 * LONG);
        for f in followers {
            f.join().unwrap();
        }
        assert!(ended.elapsed() < LONG, "woken, not timed out");
        assert_eq!(gc.lock().waiting, 0, "the ended round let its followers go");

        // Round 1: the followers come back one at a time; the leader
        // gathers until all four are there.
        let seen = gc.current();
        let gc2 = Arc::clone(&gc);
        let late = thread::spawn(move || {
            (0..4)
                .map(|_| {
                    thread::sleep(Duration::from_millis(20));
                    let gc = Arc::clone(&gc2);
                    thread::spawn(move || gc.wait(seen, 10 * LONG, true))
                })
                .collect::<Vec<_>>()
        });
        // The last fsync was slow, so the leader sleeps rather than polls:
        // each follower's arrival must wake it (gathering all four takes
        // about 80 ms, its patience `LONG`).
        let gathering = Instant::now();
        assert_eq!(gc.gather(), 5, "the whole group shares the fsync");
        assert!(gathering.elapsed() < LONG, "woken by the last arrival");
        // These followers sleep too (the last fsync was slow): `end` must
        // wake them.
        let ended = Instant::now();
        gc.end(Instant::now());
        for f in late.join().unwrap() {
            f.join().unwrap();
        }
        assert!(ended.elapsed() < LONG, "woken, not timed out");
    }

    /// Spawns a follower of the current round that waits (for at most
    /// `timeout`) and returns how long it waited; returns once the leader
    /// counts it (without taking the lock).
    fn follower(
        gc: &Arc<GroupCommit>,
        timeout: Duration,
        poll: bool,
    ) -> thread::JoinHandle<Duration> {
        let seen = gc.current();
        let before = gc.waiting.load(Ordering::Acquire);
        let handle = {
            let gc = Arc::clone(gc);
            thread::spawn(move || {
                let started = Instant::now();
                gc.wait(seen, timeout, poll);
                started.elapsed()
            })
        };
        while gc.waiting.load(Ordering::Acquire) <= before {
            thread::yield_now();
        }
        handle
    }

    #[test]
    fn a_polling_follower_sees_its_round_end_without_being_woken() {
        let gc = Arc::new(GroupCommit {
            max_polled_fsync: 2 * LONG,
            ..patient()
        });
        // The last fsync took `LONG`: followers poll for `2 * LONG`.
        gc.end(Instant::now() - LONG);
        let waiting = follower(&gc, 3 * LONG, true);
        thread::sleep(Duration::from_millis(20));
        // The round ends without a wake-up: only polling can see it.
        gc.publish_end(Instant::now());
        let waited = waiting.join().unwrap();
        assert!(
            waited < LONG,
            "let go when the round ended, not when polling or the timeout ran out: {waited:?}"
        );
        assert_eq!(gc.waiting.load(Ordering::Acquire), 0);
    }

    #[test]
    fn nobody_polls_after_a_slow_fsync_or_in_a_later_wait() {
        const SHORT: Duration = Duration::from_millis(300);
        let gc = Arc::new(GroupCommit {
            max_polled_fsync: Duration::from_millis(100),
            ..patient()
        });
        // A slow fsync: a follower sleeps at once, so a round that ends
        // without waking it lets it go only at its timeout.
        gc.end(Instant::now() - Duration::from_millis(200));
        assert_eq!(gc.spin_ns.load(Ordering::Relaxed), 0);
        let asleep = follower(&gc, SHORT, true);
        thread::sleep(Duration::from_millis(100));
        gc.publish_end(Instant::now());
        assert!(asleep.join().unwrap() >= SHORT, "it slept");
        // A fast one, but a wait that may not poll (a later one of the
        // same caller): the same.
        gc.end(Instant::now() - Duration::from_millis(10));
        assert!(gc.spin_ns.load(Ordering::Relaxed) > 0);
        let asleep = follower(&gc, SHORT, false);
        thread::sleep(Duration::from_millis(100));
        gc.publish_end(Instant::now());
        assert!(asleep.join().unwrap() >= SHORT, "it slept");
    }

    #[test]
    fn a_shrunken_group_costs_one_round_of_patience() {
        let gc = GroupCommit {
            max_patience: Duration::from_millis(50),
            ..GroupCommit::default()
        };
        {
            let mut round = gc.lock();
            round.group = 8;
            round.last_fsync = Duration::from_secs(1);
        }
        let started = Instant::now();
        assert_eq!(gc.gather(), 1, "nobody came");
        assert!(
            started.elapsed() >= Duration::from_millis(50),
            "it waited its patience"
        );
        gc.end(Instant::now() - Duration::from_secs(1));
        assert_eq!(gc.lock().group, 1, "the group is what was seen");
    }
}
