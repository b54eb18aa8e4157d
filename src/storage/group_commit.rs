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
//! polls the round, yielding the CPU between polls, for up to twice the last
//! fsync's duration (at most [`MAX_PATIENCE`]), and sleeps only if the
//! round has not ended by then; a gathering leader polls its group the same
//! way. `cargo bench --bench compare -- --only=5 --quick` measured 16
//! durable appenders at 58–77 k/s against 40–57 k/s asleep in three
//! alternating pairs of runs (the gap between fsyncs down to about 50 µs),
//! and at 36–45 against 32–35 k/s in three more pairs while the disk's
//! fsyncs took 200–320 µs. The price is
//! CPU: followers keep the CPUs busy, yielding, while an fsync they wait
//! for is in flight. A lone appender is its own leader, never a follower,
//! and never polls.
//!
//! Lock order: the mutex here is taken with no other lock held, except by
//! a leader, which holds the sync lock (never the partition's state lock)
//! while it gathers and ends a round.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Longest a leader waits for its group, whatever the last fsync took.
const MAX_PATIENCE: Duration = Duration::from_millis(2);

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
    /// the last fsync's duration, at most `max_patience`.
    spin_ns: AtomicU64,
}

impl Default for GroupCommit {
    fn default() -> Self {
        GroupCommit {
            round: Mutex::default(),
            max_patience: MAX_PATIENCE,
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
    /// ends no round), polling first, then asleep.
    pub(crate) fn wait(&self, seen: u64, timeout: Duration) {
        let started = Instant::now();
        let mut round = self.lock();
        if round.done != seen {
            return;
        }
        round.waiting += 1;
        self.waiting.store(round.waiting, Ordering::Release);
        self.joined.notify_one();
        drop(round);
        let spin = Duration::from_nanos(self.spin_ns.load(Ordering::Relaxed)).min(timeout);
        if poll_until(spin, || self.done.load(Ordering::Acquire) != seen) {
            // `end` already let go of this follower.
            return;
        }
        let round = self.lock();
        let rest = timeout.saturating_sub(started.elapsed());
        let (mut round, _) = self
            .ended
            .wait_timeout_while(round, rest, |r| r.done == seen)
            .unwrap_or_else(|e| e.into_inner());
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
        drop(round);
        poll_until(patience, || {
            self.waiting.load(Ordering::Acquire) + 1 >= expected
        });
        let round = self.lock();
        let rest = patience.saturating_sub(started.elapsed());
        let (mut round, _) = self
            .joined
            .wait_timeout_while(round, rest, |r| r.waiting + 1 < expected)
            .unwrap_or_else(|e| e.into_inner());
        round.group = round.waiting + 1;
        round.group
    }

    /// As the leader, after the fsync (still holding the sync lock, so the
    /// next leader gathers a fresh round): ends the round and wakes every
    /// follower.
    pub(crate) fn end(&self, started: Instant) {
        let mut round = self.lock();
        round.done += 1;
        round.waiting = 0;
        round.last_fsync = started.elapsed();
        let spin = (2 * round.last_fsync).min(self.max_patience);
        self.spin_ns
            .store(spin.as_nanos() as u64, Ordering::Relaxed);
        self.waiting.store(0, Ordering::Release);
        self.done.store(round.done, Ordering::Release);
        drop(round);
        self.ended.notify_all();
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
                thread::spawn(move || gc.wait(seen, 10 * LONG))
            })
            .collect();
        while gc.lock().waiting < 4 {
            thread::yield_now();
        }
        assert_eq!(gc.gather(), 5);
        gc.end(Instant::now() - 2 * LONG);
        for f in followers {
            f.join().unwrap();
        }
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
                    thread::spawn(move || gc.wait(seen, 10 * LONG))
                })
                .collect::<Vec<_>>()
        });
        assert_eq!(gc.gather(), 5, "the whole group shares the fsync");
        gc.end(Instant::now());
        for f in late.join().unwrap() {
            f.join().unwrap();
        }
    }

    #[test]
    fn a_polling_follower_is_counted_at_once_and_let_go_as_its_round_ends() {
        let gc = Arc::new(patient());
        // A slow last fsync: followers poll for up to `LONG` before they
        // sleep.
        gc.end(Instant::now() - LONG);
        assert_eq!(gc.spin_ns.load(Ordering::Relaxed), LONG.as_nanos() as u64);
        let seen = gc.current();
        let follower = {
            let gc = Arc::clone(&gc);
            thread::spawn(move || {
                let started = Instant::now();
                gc.wait(seen, 10 * LONG);
                started.elapsed()
            })
        };
        // The leader sees it without taking the lock.
        while gc.waiting.load(Ordering::Acquire) < 1 {
            thread::yield_now();
        }
        thread::sleep(Duration::from_millis(20));
        gc.end(Instant::now());
        let waited = follower.join().unwrap();
        assert!(
            waited < LONG,
            "let go when the round ended, not when polling ran out: {waited:?}"
        );
        assert_eq!(gc.waiting.load(Ordering::Acquire), 0);
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
