//! Consumers and consumer groups, through the public API: how a group
//! splits partitions, that every record reaches the group exactly once when
//! members commit after each poll (across joins, closes and timeouts),
//! durable committed offsets, the assignors, fencing, rebalance listeners,
//! offset resets, seeking, the admin view and the errors for bad input.
//!
//! Many tests drive several members of one group from a single thread:
//! the protocol is poll-driven and nobody ever waits for another member,
//! so polling each member in turn converges.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use brook::{
    Assignor, Consumer, ConsumerConfig, Error, Log, LogConfig, Message, OffsetReset,
    RebalanceContext, RebalanceListener, Record, ResetTo, Topic, TopicConfig, TopicPartition,
};

// ---------------------------------------------------------------- helpers

fn tp(topic: &str, partition: u32) -> TopicPartition {
    TopicPartition::new(topic, partition)
}

fn all_partitions(topic: &str, n: u32) -> BTreeSet<TopicPartition> {
    (0..n).map(|p| tp(topic, p)).collect()
}

fn earliest(group: &str) -> ConsumerConfig {
    ConsumerConfig::new(group).auto_offset_reset(OffsetReset::Earliest)
}

fn open(dir: &tempfile::TempDir) -> Log {
    Log::open(dir.path()).expect("open log")
}

fn topic(log: &Log, name: &str, partitions: u32) -> Topic {
    log.create_topic(name, TopicConfig::default().partitions(partitions))
        .unwrap_or_else(|e| panic!("create topic {name}: {e}"))
}

/// Appends `per_partition` records to every partition of `topic`.
fn fill(topic: &Topic, per_partition: u64) {
    for p in 0..topic.partition_count() {
        let records: Vec<Record> = (0..per_partition)
            .map(|i| {
                Record::new(format!("{}-{p}-{i}", topic.name()))
                    .key(format!("k{i}"))
                    .partition(p)
            })
            .collect();
        topic.send_batch(records).expect("append a batch");
    }
}

fn end_offsets(log: &Log, name: &str) -> Vec<u64> {
    let t = log.topic(name).expect("topic exists");
    (0..t.partition_count())
        .map(|p| t.partition(p).expect("partition").end_offset())
        .collect()
}

fn expect_err<T: std::fmt::Debug>(r: brook::Result<T>, what: &str) -> Error {
    match r {
        Ok(v) => panic!("{what}: expected an error, got Ok({v:?})"),
        Err(e) => e,
    }
}

fn set(c: &Consumer) -> BTreeSet<TopicPartition> {
    c.assignment().into_iter().collect()
}

/// Asserts that no partition is assigned to two members at once.
fn assert_disjoint(members: &[Consumer], when: &str) {
    let mut seen: BTreeMap<TopicPartition, String> = BTreeMap::new();
    for (i, m) in members.iter().enumerate() {
        for p in m.assignment() {
            let who = format!("member #{i} ({:?})", m.member_id());
            if let Some(other) = seen.insert(p.clone(), who.clone()) {
                panic!("{when}: {p} is assigned to both {other} and {who}");
            }
        }
    }
}

/// Polls every member in turn, without waiting, until their assignments
/// are disjoint, cover `expected`, and stay the same for a whole round.
/// Returns each member's assignment. Only for topics whose records the
/// caller does not count (the polls consume them).
fn converge(
    members: &mut [Consumer],
    expected: &BTreeSet<TopicPartition>,
) -> Vec<BTreeSet<TopicPartition>> {
    let mut last: Option<Vec<BTreeSet<TopicPartition>>> = None;
    for round in 0..50 {
        for i in 0..members.len() {
            members[i]
                .poll(Duration::ZERO)
                .unwrap_or_else(|e| panic!("round {round}: poll of member #{i} failed: {e}"));
            assert_disjoint(members, &format!("round {round}, after member #{i} polled"));
        }
        let now: Vec<BTreeSet<TopicPartition>> = members.iter().map(set).collect();
        let union: BTreeSet<TopicPartition> = now.iter().flatten().cloned().collect();
        if &union == expected && last.as_ref() == Some(&now) {
            return now;
        }
        last = Some(now);
    }
    panic!("the group did not converge on {expected:?} in 50 rounds; last assignments {last:?}")
}

/// Every (partition, offset) a group delivered, and who got it.
#[derive(Default)]
struct Ledger {
    deliveries: BTreeMap<(u32, u64), Vec<&'static str>>,
    per_member: BTreeMap<&'static str, usize>,
}

impl Ledger {
    fn take(&mut self, who: &'static str, msgs: &[Message]) {
        for m in msgs {
            self.deliveries
                .entry((m.partition(), m.offset()))
                .or_default()
                .push(who);
            *self.per_member.entry(who).or_default() += 1;
        }
    }

    fn distinct(&self) -> u64 {
        self.deliveries.len() as u64
    }

    /// Asserts each offset below `ends[p]` of each partition was delivered
    /// exactly once, and nothing else was.
    fn assert_exactly_once(&self, ends: &[u64]) {
        let dups: Vec<_> = self
            .deliveries
            .iter()
            .filter(|(_, who)| who.len() > 1)
            .take(10)
            .collect();
        let mut missing = Vec::new();
        for (p, &end) in ends.iter().enumerate() {
            for o in 0..end {
                if !self.deliveries.contains_key(&(p as u32, o)) {
                    missing.push((p, o));
                }
            }
        }
        let extra: Vec<_> = self
            .deliveries
            .keys()
            .filter(|(p, o)| ends.get(*p as usize).is_none_or(|&end| *o >= end))
            .take(10)
            .collect();
        assert!(
            dups.is_empty() && missing.is_empty() && extra.is_empty(),
            "delivery was not exactly once: duplicates (first 10, (partition, offset) -> members) \
             {dups:?}; missing ({} in all, first 10) {:?}; beyond the end {extra:?}",
            missing.len(),
            &missing[..missing.len().min(10)]
        );
    }
}

/// One poll that does not wait long, then a commit: the pattern that gives
/// exactly-once delivery to a group whose members do not crash.
fn poll_and_commit(c: &mut Consumer, who: &'static str, ledger: &mut Ledger) -> usize {
    let msgs = c
        .poll(Duration::from_millis(2))
        .unwrap_or_else(|e| panic!("{who}: poll failed: {e}"));
    ledger.take(who, &msgs);
    c.commit()
        .unwrap_or_else(|e| panic!("{who}: commit after poll failed: {e}"));
    msgs.len()
}

/// Polls (waiting up to 50 ms each time) until `n` messages arrived or 5 s passed.
fn poll_n(c: &mut Consumer, n: usize) -> Vec<Message> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut out = Vec::new();
    while out.len() < n && Instant::now() < deadline {
        out.extend(c.poll(Duration::from_millis(50)).expect("poll"));
    }
    assert_eq!(out.len(), n, "expected {n} messages within 5 s");
    out
}

fn offsets_of(msgs: &[Message]) -> Vec<(u32, u64)> {
    msgs.iter().map(|m| (m.partition(), m.offset())).collect()
}

// ------------------------------------------------------ splitting a topic

#[test]
fn three_members_split_twelve_partitions_four_each() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir);
    topic(&log, "orders", 12);
    for assignor in [
        Assignor::Range,
        Assignor::RoundRobin,
        Assignor::CooperativeSticky,
    ] {
        let group = format!("split-{assignor:?}");
        let mut members: Vec<Consumer> = (0..3)
            .map(|_| {
                let mut c = log
                    .consumer_with(ConsumerConfig::new(group.as_str()).assignor(assignor))
                    .unwrap();
                c.subscribe(&["orders"]).unwrap();
                c
            })
            .collect();
        let got = converge(&mut members, &all_partitions("orders", 12));
        for (i, a) in got.iter().enumerate() {
            assert_eq!(
                a.len(),
                4,
                "{assignor:?}: member #{i} owns {a:?}, not 4 partitions"
            );
        }
        // The admin view agrees with what the consumers hold.
        let described = log.group(&group).unwrap().members();
        assert_eq!(
            described.len(),
            3,
            "{assignor:?}: members() = {described:?}"
        );
        for m in &members {
            let id = m
                .member_id()
                .expect("a subscribed consumer has a member id");
            let d = described
                .iter()
                .find(|d| d.member_id == id)
                .unwrap_or_else(|| panic!("{assignor:?}: {id} missing from members()"));
            assert_eq!(
                d.assignment,
                m.assignment(),
                "{assignor:?}: members() for {id}"
            );
            assert_eq!(d.topics, vec!["orders".to_string()]);
        }
    }
}

#[test]
fn every_record_is_delivered_exactly_once_across_join_close_and_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir);
    let orders = topic(&log, "orders", 12);
    let cfg = |session: Duration| {
        earliest("billing")
            .enable_auto_commit(false)
            .max_poll_records(8)
            .session_timeout(session)
    };
    let short_session = Duration::from_millis(500);
    let mut ledger = Ledger::default();
    let mut produced = 0u64;
    let mut produce = |n_per_partition: u64| {
        fill(&orders, n_per_partition);
        produced += 12 * n_per_partition;
        produced
    };

    let mut a = log.consumer_with(cfg(Duration::from_secs(30))).unwrap();
    let mut b = log.consumer_with(cfg(Duration::from_secs(30))).unwrap();
    a.subscribe(&["orders"]).unwrap();
    b.subscribe(&["orders"]).unwrap();
    let total = produce(40);

    // Phase 1: two members.
    for _ in 0..10_000 {
        if ledger.distinct() >= total / 3 {
            break;
        }
        poll_and_commit(&mut a, "a", &mut ledger);
        poll_and_commit(&mut b, "b", &mut ledger);
    }
    assert!(ledger.distinct() >= total / 3, "phase 1 made no progress");

    // Phase 2: c joins mid-way, with a short session timeout, while more
    // records arrive.
    let mut c = log.consumer_with(cfg(short_session)).unwrap();
    c.subscribe(&["orders"]).unwrap();
    let mut total = total;
    for round in 0..10_000 {
        if round % 20 == 0 && round < 200 {
            total = produce(5);
        }
        if ledger.distinct() >= total * 2 / 3 && ledger.per_member.get("c").copied() > Some(20) {
            break;
        }
        poll_and_commit(&mut a, "a", &mut ledger);
        poll_and_commit(&mut b, "b", &mut ledger);
        poll_and_commit(&mut c, "c", &mut ledger);
    }
    assert!(
        ledger.per_member.get("c").copied().unwrap_or(0) > 20,
        "the member that joined mid-way got almost nothing: {:?}",
        ledger.per_member
    );
    assert!(
        ledger.distinct() < total,
        "everything was consumed before the close/timeout phases; the test proves less than it should"
    );

    // Phase 3: b closes; a and c take over its partitions.
    b.close().expect("close b");
    total = produce(10);
    let mut members_after_close = 0;
    for _ in 0..10_000 {
        poll_and_commit(&mut a, "a", &mut ledger);
        poll_and_commit(&mut c, "c", &mut ledger);
        members_after_close = log.group("billing").unwrap().members().len();
        if set(&a).len() + set(&c).len() == 12 && ledger.distinct() >= total * 5 / 6 {
            break;
        }
    }
    assert_eq!(members_after_close, 2, "b still listed after close");
    assert_eq!(
        set(&a).len() + set(&c).len(),
        12,
        "after b closed, a and c should own all 12 partitions: a {:?}, c {:?}",
        a.assignment(),
        c.assignment()
    );
    assert!(
        ledger.distinct() < total,
        "nothing left for the timeout phase"
    );

    // Phase 4: c stops polling; a keeps polling past c's session timeout,
    // evicts it and takes its partitions.
    let c_owned_before = set(&c);
    assert!(
        !c_owned_before.is_empty(),
        "c owns nothing before it stalls"
    );
    let stalled_at = Instant::now();
    let mut took_over_after = None;
    while stalled_at.elapsed() < Duration::from_secs(20) {
        poll_and_commit(&mut a, "a", &mut ledger);
        if set(&a).len() == 12 {
            took_over_after = Some(stalled_at.elapsed());
            break;
        }
    }
    let took_over_after =
        took_over_after.expect("a never took over the partitions of the stalled member c");
    assert!(
        took_over_after >= short_session,
        "c's partitions moved after {took_over_after:?}, before its session timeout {short_session:?}"
    );
    total = produce(5);
    for _ in 0..10_000 {
        if ledger.distinct() >= total {
            break;
        }
        poll_and_commit(&mut a, "a", &mut ledger);
    }
    // The stalled member cannot overwrite the new owner's offsets.
    let e = expect_err(c.commit(), "commit of the evicted member c");
    assert!(matches!(e, Error::Fenced { .. }), "c.commit(): {e:?}");

    let ends = end_offsets(&log, "orders");
    assert_eq!(ends.iter().sum::<u64>(), total);
    ledger.assert_exactly_once(&ends);
    let g = log.group("billing").unwrap();
    for (p, &end) in ends.iter().enumerate() {
        assert_eq!(
            g.committed(&tp("orders", p as u32)).unwrap(),
            Some(end),
            "committed offset of orders-{p} after everything was consumed"
        );
    }
    for who in ["a", "b", "c"] {
        assert!(
            ledger.per_member.get(who).copied().unwrap_or(0) > 0,
            "{who} got nothing: {:?}",
            ledger.per_member
        );
    }
}

#[test]
fn a_dropped_member_hands_its_partitions_to_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir);
    topic(&log, "t", 6);
    let mut members: Vec<Consumer> = (0..3)
        .map(|_| {
            let mut c = log.consumer("g").unwrap();
            c.subscribe(&["t"]).unwrap();
            c
        })
        .collect();
    converge(&mut members, &all_partitions("t", 6));
    drop(members.pop());
    assert_eq!(log.group("g").unwrap().members().len(), 2);
    let got = converge(&mut members, &all_partitions("t", 6));
    assert_eq!(got[0].len() + got[1].len(), 6);
    assert_eq!((got[0].len(), got[1].len()), (3, 3), "{got:?}");
}

#[test]
fn a_joining_member_gets_partitions_once_their_owner_releases_them_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir);
    topic(&log, "t", 4);
    let mut a = log.consumer("g").unwrap();
    a.subscribe(&["t"]).unwrap();
    a.poll(Duration::ZERO).unwrap();
    assert_eq!(set(&a), all_partitions("t", 4), "a alone owns everything");

    let mut b = log.consumer("g").unwrap();
    b.subscribe(&["t"]).unwrap();
    // a has not polled: b's poll must not wait for it, and gets nothing yet.
    let started = Instant::now();
    b.poll(Duration::from_millis(200)).unwrap();
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(2),
        "b's poll blocked {waited:?} waiting for a"
    );
    assert!(
        b.assignment().is_empty(),
        "b got {:?} before a released anything",
        b.assignment()
    );
    assert_eq!(a.assignment().len(), 4, "a lost partitions without polling");

    a.poll(Duration::ZERO).unwrap(); // a gives up what moves to b
    assert_eq!(
        a.assignment().len(),
        2,
        "a after releasing: {:?}",
        a.assignment()
    );
    b.poll(Duration::ZERO).unwrap(); // b takes it
    assert_eq!(
        b.assignment().len(),
        2,
        "b after a released: {:?}",
        b.assignment()
    );
    let union: BTreeSet<_> = set(&a).union(&set(&b)).cloned().collect();
    assert_eq!(union, all_partitions("t", 4));
}

// ------------------------------------------------------- durable offsets

#[test]
fn committed_offsets_survive_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut first: Vec<(u32, u64)>;
    let committed: Vec<Option<u64>>;
    {
        let log = open(&dir);
        let t = topic(&log, "t", 3);
        fill(&t, 30);
        let mut c = log
            .consumer_with(earliest("g").enable_auto_commit(false).max_poll_records(15))
            .unwrap();
        c.subscribe(&["t"]).unwrap();
        first = offsets_of(&poll_n(&mut c, 45));
        c.commit().unwrap();
        committed = (0..3).map(|p| c.committed(&tp("t", p)).unwrap()).collect();
        // Read further without committing: must be read again after reopen.
        c.poll(Duration::from_millis(50)).unwrap();
        c.close().unwrap();
        log.close().unwrap();
    }
    for (p, c) in committed.iter().enumerate() {
        let read = first.iter().filter(|(q, _)| *q == p as u32).count() as u64;
        assert_eq!(*c, Some(read), "committed offset of t-{p} before reopen");
    }

    let log = open(&dir);
    let g = log.group("g").unwrap();
    for (p, c) in committed.iter().enumerate() {
        assert_eq!(
            g.committed(&tp("t", p as u32)).unwrap(),
            *c,
            "committed offset of t-{p} after reopen"
        );
    }
    assert!(
        log.groups().contains(&"g".to_string()),
        "{:?}",
        log.groups()
    );
    // Default config (Latest): a committed offset wins over the reset policy.
    let mut c = log.consumer("g").unwrap();
    c.subscribe(&["t"]).unwrap();
    let rest = poll_n(&mut c, 45);
    for (p, committed) in committed.iter().enumerate() {
        let firsts: Vec<u64> = rest
            .iter()
            .filter(|m| m.partition() == p as u32)
            .map(Message::offset)
            .take(1)
            .collect();
        if committed.unwrap() < 30 {
            assert_eq!(
                firsts,
                vec![committed.unwrap()],
                "t-{p}: the reopened group must resume at its committed offset"
            );
        }
    }
    first.extend(offsets_of(&rest));
    first.sort();
    first.dedup();
    assert_eq!(
        first.len(),
        90,
        "every record read once before or after reopen"
    );
}

#[test]
fn close_commits_positions_when_auto_commit_is_on() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir);
    let t = topic(&log, "t", 1);
    fill(&t, 10);
    let mut c = log.consumer_with(earliest("g")).unwrap();
    c.assign(&[tp("t", 0)]).unwrap();
    poll_n(&mut c, 10);
    assert_eq!(
        c.committed(&tp("t", 0)).unwrap(),
        None,
        "nothing committed yet"
    );
    c.close().unwrap();
    assert_eq!(
        log.group("g").unwrap().committed(&tp("t", 0)).unwrap(),
        Some(10),
        "close with enable_auto_commit(true) must commit the position"
    );
}

#[test]
fn auto_commit_runs_every_interval_during_poll() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir);
    let t = topic(&log, "t", 1);
    fill(&t, 10);
    let mut c = log
        .consumer_with(earliest("g").auto_commit_interval(Duration::from_millis(50)))
        .unwrap();
    c.subscribe(&["t"]).unwrap();
    poll_n(&mut c, 10);
    std::thread::sleep(Duration::from_millis(80));
    c.poll(Duration::ZERO).unwrap();
    assert_eq!(
        c.committed(&tp("t", 0)).unwrap(),
        Some(10),
        "a poll after auto_commit_interval must commit the positions"
    );
}

#[test]
fn a_consumer_without_auto_commit_commits_nothing_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir);
    let t = topic(&log, "t", 1);
    fill(&t, 10);
    let mut c = log
        .consumer_with(
            earliest("g")
                .enable_auto_commit(false)
                .auto_commit_interval(Duration::from_millis(1)),
        )
        .unwrap();
    c.subscribe(&["t"]).unwrap();
    poll_n(&mut c, 10);
    std::thread::sleep(Duration::from_millis(5));
    c.poll(Duration::ZERO).unwrap();
    c.close().unwrap();
    assert_eq!(
        log.group("g").unwrap().committed(&tp("t", 0)).unwrap(),
        None
    );
}

// ------------------------------------------------------ independent groups

#[test]
fn independent_groups_each_see_every_record() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir);
    let t = topic(&log, "t", 4);
    fill(&t, 25);
    let mut ledgers: Vec<Ledger> = Vec::new();
    for (group, n) in [("g1", 2), ("g2", 1), ("g3", 3)] {
        let mut members: Vec<Consumer> = (0..n)
            .map(|_| {
                let mut c = log
                    .consumer_with(
                        earliest(group)
                            .enable_auto_commit(false)
                            .max_poll_records(7),
                    )
                    .unwrap();
                c.subscribe(&["t"]).unwrap();
                c
            })
            .collect();
        let mut ledger = Ledger::default();
        for _ in 0..1000 {
            if ledger.distinct() == 100 {
                break;
            }
            for m in members.iter_mut() {
                poll_and_commit(m, "member", &mut ledger);
            }
        }
        ledger.assert_exactly_once(&end_offsets(&log, "t"));
        ledgers.push(ledger);
    }
    let g = log.group("g2").unwrap();
    assert!(g.lag().unwrap().iter().all(|l| l.lag == 0));
    assert_eq!(
        log.groups(),
        vec!["g1".to_string(), "g2".into(), "g3".into()]
    );
}

// ------------------------------------------------------------- wake-up

#[test]
fn poll_wakes_up_when_another_thread_appends() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir);
    let t = topic(&log, "t", 2);
    let mut c = log.consumer("g").unwrap(); // Latest
    c.subscribe(&["t"]).unwrap();
    c.poll(Duration::ZERO).unwrap();
    assert_eq!(c.assignment().len(), 2);
    assert_eq!(c.position(&tp("t", 1)).unwrap(), 0);

    let appender = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        t.send(Record::new("hello").partition(1)).unwrap();
    });
    let started = Instant::now();
    let msgs = c.poll(Duration::from_secs(5)).unwrap();
    let waited = started.elapsed();
    appender.join().unwrap();
    assert_eq!(msgs.len(), 1, "poll returned {msgs:?}");
    assert_eq!(msgs[0].value(), Some(&b"hello"[..]));
    assert!(
        waited < Duration::from_secs(2),
        "poll(5 s) returned {waited:?} after it started, though a record arrived after 200 ms"
    );
    assert!(
        waited >= Duration::from_millis(150),
        "poll returned after {waited:?}, before the record was appended"
    );
}

#[test]
fn poll_waits_out_its_timeout_when_nothing_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir);
    topic(&log, "t", 1);
    let mut c = log.consumer("g").unwrap();
    c.subscribe(&["t"]).unwrap();
    let started = Instant::now();
    let msgs = c.poll(Duration::from_millis(300)).unwrap();
    let waited = started.elapsed();
    assert!(msgs.is_empty());
    assert!(
        waited >= Duration::from_millis(290) && waited < Duration::from_secs(3),
        "poll(300 ms) on an idle topic returned after {waited:?}"
    );
}

// ----------------------------------------------------------- assignors

fn group_of(
    log: &Log,
    group: &str,
    assignor: Assignor,
    topics: &[&str],
    n: usize,
) -> Vec<Consumer> {
    (0..n)
        .map(|_| {
            let mut c = log
                .consumer_with(ConsumerConfig::new(group).assignor(assignor))
                .unwrap();
            c.subscribe(topics).unwrap();
            c
        })
        .collect()
}

/// Members' assignments keyed by member id (sorted as the assignors sort).
fn by_member_id(members: &[Consumer]) -> Vec<(String, Vec<String>)> {
    let mut v: Vec<(String, Vec<String>)> = members
        .iter()
        .map(|m| {
            (
                m.member_id().unwrap().to_owned(),
                m.assignment().iter().map(|p| p.to_string()).collect(),
            )
        })
        .collect();
    v.sort();
    v
}

fn two_topics(log: &Log) -> BTreeSet<TopicPartition> {
    topic(log, "x", 7);
    topic(log, "y", 3);
    all_partitions("x", 7)
        .union(&all_partitions("y", 3))
        .cloned()
        .collect()
}

#[test]
fn range_assignor_gives_members_sorted_by_id_consecutive_ranges_per_topic() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir);
    let all = two_topics(&log);
    let mut members = group_of(&log, "g", Assignor::Range, &["x", "y"], 3);
    converge(&mut members, &all);
    let got = by_member_id(&members);
    let want = [
        vec!["x-0", "x-1", "x-2", "y-0"],
        vec!["x-3", "x-4", "y-1"],
        vec!["x-5", "x-6", "y-2"],
    ];
    for ((id, parts), want) in got.iter().zip(want) {
        assert_eq!(
            parts, &want,
            "Range: member {id} (members sorted by id: {got:?})"
        );
    }
}

#[test]
fn round_robin_assignor_deals_sorted_partitions_in_turn() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir);
    let all = two_topics(&log);
    let mut members = group_of(&log, "g", Assignor::RoundRobin, &["x", "y"], 3);
    converge(&mut members, &all);
    let got = by_member_id(&members);
    let want = [
        vec!["x-0", "x-3", "x-6", "y-2"],
        vec!["x-1", "x-4", "y-0"],
        vec!["x-2", "x-5", "y-1"],
    ];
    for ((id, parts), want) in got.iter().zip(want) {
        assert_eq!(
            parts, &want,
            "RoundRobin: member {id} (sorted by id: {got:?})"
        );
    }
}

#[test]
fn assignors_give_partitions_only_to_members_subscribed_to_their_topic() {
    for assignor in [
        Assignor::Range,
        Assignor::RoundRobin,
        Assignor::CooperativeSticky,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let log = open(&dir);
        let all = two_topics(&log);
        let mut members = vec![
            group_of(&log, "g", assignor, &["x"], 1).remove(0),
            group_of(&log, "g", assignor, &["x", "y"], 1).remove(0),
            group_of(&log, "g", assignor, &["y"], 1).remove(0),
        ];
        let got = converge(&mut members, &all);
        assert!(
            got[0].iter().all(|p| p.topic == "x"),
            "{assignor:?}: {got:?}"
        );
        assert!(
            got[2].iter().all(|p| p.topic == "y"),
            "{assignor:?}: {got:?}"
        );
        assert!(got.iter().all(|a| !a.is_empty()), "{assignor:?}: {got:?}");
    }
}

#[test]
fn cooperative_sticky_moves_only_the_partitions_it_must() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir);
    topic(&log, "t", 12);
    let all = all_partitions("t", 12);
    let mut members = group_of(&log, "g", Assignor::CooperativeSticky, &["t"], 2);
    let before = converge(&mut members, &all);
    assert_eq!((before[0].len(), before[1].len()), (6, 6), "{before:?}");

    // A third member joins: 4 partitions must move, 2 from each old member.
    members.extend(group_of(&log, "g", Assignor::CooperativeSticky, &["t"], 1));
    let after = converge(&mut members, &all);
    for i in 0..2 {
        assert_eq!(
            after[i].len(),
            4,
            "member #{i} after the join: {:?}",
            after[i]
        );
        assert!(
            after[i].is_subset(&before[i]),
            "member #{i} gained partitions it did not own: before {:?}, after {:?}",
            before[i],
            after[i]
        );
    }
    let moved = before[0].difference(&after[0]).count() + before[1].difference(&after[1]).count();
    assert_eq!(
        moved, 4,
        "a join of a third member moved {moved} partitions, not 4"
    );
    assert_eq!(after[2].len(), 4);

    // The second member leaves: the others keep all they had.
    drop(members.remove(1));
    let after_leave = converge(&mut members, &all);
    assert!(
        after_leave[0].is_superset(&after[0]),
        "{after:?} -> {after_leave:?}"
    );
    assert!(
        after_leave[1].is_superset(&after[2]),
        "{after:?} -> {after_leave:?}"
    );
    assert_eq!((after_leave[0].len(), after_leave[1].len()), (6, 6));
}

// ------------------------------------------------------ fencing, timeouts

#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Assigned(Vec<TopicPartition>),
    Revoked(Vec<TopicPartition>, Result<(), String>),
    Lost(Vec<TopicPartition>),
}

/// Records every callback; commits in `on_partitions_revoked`.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Event>>>);

impl Recorder {
    fn events(&self) -> Vec<Event> {
        self.0.lock().unwrap().clone()
    }
}

impl RebalanceListener for Recorder {
    fn on_partitions_revoked(&mut self, c: &mut RebalanceContext<'_>, parts: &[TopicPartition]) {
        let r = c.commit().map_err(|e| e.to_string());
        self.0
            .lock()
            .unwrap()
            .push(Event::Revoked(parts.to_vec(), r));
    }
    fn on_partitions_assigned(&mut self, _: &mut RebalanceContext<'_>, parts: &[TopicPartition]) {
        self.0.lock().unwrap().push(Event::Assigned(parts.to_vec()));
    }
    fn on_partitions_lost(&mut self, parts: &[TopicPartition]) {
        self.0.lock().unwrap().push(Event::Lost(parts.to_vec()));
    }
}

/// Makes `victim` miss its session timeout: `other` keeps polling until the
/// group no longer lists the victim.
fn evict(log: &Log, group: &str, victim_id: &str, other: &mut Consumer) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        other.poll(Duration::from_millis(20)).unwrap();
        let members = log.group(group).unwrap().members();
        if members.iter().all(|m| m.member_id != victim_id) {
            return;
        }
    }
    panic!("{victim_id} was not evicted within 10 s");
}

#[test]
fn an_evicted_member_is_fenced_and_rejoins_at_its_next_poll() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir);
    let t = topic(&log, "t", 2);
    fill(&t, 10);
    let recorder = Recorder::default();
    let mut a = log
        .consumer_with(
            earliest("g")
                .enable_auto_commit(false)
                .session_timeout(Duration::from_millis(300))
                .on_rebalance(recorder.clone()),
        )
        .unwrap();
    a.subscribe(&["t"]).unwrap();
    poll_n(&mut a, 20);
    a.commit().unwrap();
    let old_id = a.member_id().unwrap().to_owned();

    let mut b = log
        .consumer_with(earliest("g").enable_auto_commit(false))
        .unwrap();
    b.subscribe(&["t"]).unwrap();
    evict(&log, "g", &old_id, &mut b);
    b.poll(Duration::ZERO).unwrap();
    assert_eq!(
        b.assignment().len(),
        2,
        "b takes the evicted member's partitions"
    );
    fill(&t, 5);
    poll_n(&mut b, 10);
    b.commit().unwrap();

    // The stalled member's commits are refused: it cannot overwrite b's.
    let e = expect_err(a.commit(), "commit() of an evicted member");
    assert!(matches!(e, Error::Fenced { .. }), "commit(): {e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("\"g\"") && msg.contains(&old_id),
        "message: {msg}"
    );
    let e = expect_err(
        a.commit_offsets(&[(tp("t", 0), 3)]),
        "commit_offsets() of an evicted member",
    );
    assert!(matches!(e, Error::Fenced { .. }), "commit_offsets(): {e:?}");
    for p in 0..2 {
        assert_eq!(b.committed(&tp("t", p)).unwrap(), Some(15), "t-{p}");
    }

    // Its next poll rejoins it as a new member; it learns it lost its partitions.
    a.poll(Duration::ZERO)
        .expect("poll of an evicted member rejoins");
    let new_id = a.member_id().expect("rejoined").to_owned();
    assert_ne!(new_id, old_id, "an evicted member rejoins under a new id");
    let lost: Vec<_> = recorder
        .events()
        .into_iter()
        .filter(|e| matches!(e, Event::Lost(_)))
        .collect();
    assert_eq!(lost, vec![Event::Lost(vec![tp("t", 0), tp("t", 1)])]);
    let mut members = vec![a, b];
    let got = converge(&mut members, &all_partitions("t", 2));
    assert_eq!((got[0].len(), got[1].len()), (1, 1), "{got:?}");
}

#[test]
fn a_timed_out_member_with_auto_commit_rejoins_at_its_next_poll() {
    // Kafka's poll never fails because an auto-commit was refused; the
    // protocol says an evicted member's next poll rejoins it.
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir);
    let t = topic(&log, "t", 2);
    fill(&t, 10);
    let mut a = log
        .consumer_with(
            earliest("g")
                .auto_commit_interval(Duration::from_millis(100))
                .session_timeout(Duration::from_millis(300)),
        )
        .unwrap();
    a.subscribe(&["t"]).unwrap();
    poll_n(&mut a, 20);
    std::thread::sleep(Duration::from_millis(450));
    let r = a.poll(Duration::from_millis(10));
    assert!(
        r.is_ok(),
        "the first poll after a session timeout (auto-commit on) failed instead of rejoining: {:?}",
        r.err()
    );
    assert!(a.member_id().is_some());
}

#[test]
fn an_evicted_member_learns_its_partitions_were_lost_not_revoked_when_it_closes() {
    // RebalanceListener::on_partitions_revoked promises "the consumer still
    // owns them, so commits for them succeed"; an evicted member owns nothing.
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir);
    topic(&log, "t", 2);
    let recorder = Recorder::default();
    let mut a = log
        .consumer_with(
            ConsumerConfig::new("g")
                .enable_auto_commit(false)
                .session_timeout(Duration::from_millis(200))
                .on_rebalance(recorder.clone()),
        )
        .unwrap();
    a.subscribe(&["t"]).unwrap();
    a.poll(Duration::ZERO).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let _ = a.close();
    let events = recorder.events();
    let bad: Vec<_> = events
        .iter()
        .filter(|e| matches!(e, Event::Revoked(_, Err(_))))
        .collect();
    assert!(
        bad.is_empty(),
        "on_partitions_revoked ran for partitions the member no longer owned (its commit failed): {events:?}"
    );
}

#[test]
fn closing_an_evicted_member_does_not_fail() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir);
    let t = topic(&log, "t", 1);
    fill(&t, 3);
    let mut a = log
        .consumer_with(earliest("g").session_timeout(Duration::from_millis(200)))
        .unwrap();
    a.subscribe(&["t"]).unwrap();
    poll_n(&mut a, 3);
    std::thread::sleep(Duration::from_millis(300));
    let r = a.close();
    assert!(
        r.is_ok(),
        "close() of an evicted member (auto-commit on): {r:?}"
    );
}

// -------------------------------------------------- rebalance listeners

#[test]
fn rebalance_listener_sees_revoked_and_assigned_partitions_and_can_commit_on_revoke() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir);
    let t = topic(&log, "t", 4);
    fill(&t, 10);
    let rec_a = Recorder::default();
    let rec_b = Recorder::default();
    let cfg = |r: &Recorder| {
        earliest("g")
            .enable_auto_commit(false)
            .on_rebalance(r.clone())
    };
    let mut a = log.consumer_with(cfg(&rec_a)).unwrap();
    a.subscribe(&["t"]).unwrap();
    let mut ledger = Ledger::default();
    ledger.take("a", &poll_n(&mut a, 40)); // read everything, commit nothing
    assert_eq!(
        rec_a.events(),
        vec![Event::Assigned(
            all_partitions("t", 4).into_iter().collect()
        )]
    );

    let mut b = log.consumer_with(cfg(&rec_b)).unwrap();
    b.subscribe(&["t"]).unwrap();
    b.poll(Duration::ZERO).unwrap();
    a.poll(Duration::ZERO).unwrap(); // revokes t-2, t-3 (Range)
    let revoked = vec![tp("t", 2), tp("t", 3)];
    assert_eq!(
        rec_a.events()[1..],
        [Event::Revoked(revoked.clone(), Ok(()))],
        "a's listener after b joined"
    );
    // The commit made in on_partitions_revoked is what b starts from.
    for p in &revoked {
        assert_eq!(
            log.group("g").unwrap().committed(p).unwrap(),
            Some(10),
            "{p}"
        );
    }
    assert_eq!(
        log.group("g").unwrap().committed(&tp("t", 0)).unwrap(),
        Some(10),
        "commit() in the callback commits every partition the member holds"
    );
    b.poll(Duration::ZERO).unwrap();
    assert_eq!(rec_b.events(), vec![Event::Assigned(revoked)]);
    fill(&t, 1);
    let mut members = vec![a, b];
    for _ in 0..100 {
        for (m, who) in members.iter_mut().zip(["a", "b"]) {
            poll_and_commit(m, who, &mut ledger);
        }
    }
    ledger.assert_exactly_once(&end_offsets(&log, "t"));

    // close() revokes everything it holds.
    let mut a = members.remove(0);
    a.close().unwrap();
    assert_eq!(
        rec_a.events().last(),
        Some(&Event::Revoked(vec![tp("t", 0), tp("t", 1)], Ok(())))
    );
}

#[test]
fn a_listener_can_seek_when_partitions_are_assigned() {
    struct SeekTo(u64);
    impl RebalanceListener for SeekTo {
        fn on_partitions_assigned(
            &mut self,
            c: &mut RebalanceContext<'_>,
            parts: &[TopicPartition],
        ) {
            for p in parts {
                c.seek(p, self.0).unwrap();
                assert_eq!(c.position(p).unwrap(), self.0);
                assert_eq!(c.committed(p).unwrap(), None);
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir);
    let t = topic(&log, "t", 1);
    fill(&t, 10);
    let mut c = log
        .consumer_with(earliest("g").on_rebalance(SeekTo(7)))
        .unwrap();
    c.subscribe(&["t"]).unwrap();
    let msgs = poll_n(&mut c, 3);
    assert_eq!(offsets_of(&msgs), vec![(0, 7), (0, 8), (0, 9)]);
}

// ------------------------------------------------------ growing a topic

#[test]
fn add_partitions_on_a_subscribed_topic_assigns_the_new_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir);
    topic(&log, "t", 2);
    let mut members: Vec<Consumer> = (0..2)
        .map(|_| {
            let mut c = log.consumer_with(earliest("g")).unwrap();
            c.subscribe(&["t"]).unwrap();
            c
        })
        .collect();
    converge(&mut members, &all_partitions("t", 2));
    log.add_partitions("t", 6).unwrap();
    let got = converge(&mut members, &all_partitions("t", 6));
    assert_eq!((got[0].len(), got[1].len()), (3, 3), "{got:?}");

    // Records appended to the new partitions reach the group.
    let t = log.topic("t").unwrap();
    for p in 2..6 {
        t.send(Record::new("new").partition(p)).unwrap();
    }
    let mut ledger = Ledger::default();
    for _ in 0..200 {
        for m in members.iter_mut() {
            poll_and_commit(m, "m", &mut ledger);
        }
        if ledger.distinct() == 4 {
            break;
        }
    }
    ledger.assert_exactly_once(&end_offsets(&log, "t"));
}

// ------------------------------------------------------- offset reset

#[test]
fn offset_reset_earliest_starts_at_the_first_stored_record() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir);
    let t = topic(&log, "t", 1);
    fill(&t, 5);
    let mut c = log.consumer_with(earliest("g")).unwrap();
    c.subscribe(&["t"]).unwrap();
    let msgs = poll_n(&mut c, 5);
    assert_eq!(
        offsets_of(&msgs),
        (0..5).map(|o| (0, o)).collect::<Vec<_>>()
    );
}

#[test]
fn offset_reset_latest_reads_only_records_appended_later() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir);
    let t = topic(&log, "t", 1);
    fill(&t, 5);
    let mut c = log.consumer("g").unwrap();
    c.subscribe(&["t"]).unwrap();
    assert!(c.poll(Duration::from_millis(50)).unwrap().is_empty());
    assert_eq!(c.position(&tp("t", 0)).unwrap(), 5);
    t.append("k", "after").unwrap();
    let msgs = poll_n(&mut c, 1);
    assert_eq!(
        (msgs[0].offset(), msgs[0].value()),
        (5, Some(&b"after"[..]))
    );
}

#[test]
fn offset_reset_none_fails_with_no_offset_naming_the_partition() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir);
    let t = topic(&log, "t", 1);
    fill(&t, 5);
    let none = || ConsumerConfig::new("strict").auto_offset_reset(OffsetReset::None);
    let mut c = log.consumer_with(none()).unwrap();
    c.assign(&[tp("t", 0)]).unwrap();
    let e = expect_err(c.poll(Duration::ZERO), "poll without a committed offset");
    assert!(matches!(e, Error::NoOffset { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("t-0") && msg.contains("strict"),
        "message: {msg}"
    );
    let e = expect_err(
        c.position(&tp("t", 0)),
        "position without a committed offset",
    );
    assert!(matches!(e, Error::NoOffset { .. }), "{e:?}");

    // With a committed offset, OffsetReset::None reads from it.
    c.commit_offsets(&[(tp("t", 0), 2)]).unwrap();
    let mut c = log.consumer_with(none()).unwrap();
    c.subscribe(&["t"]).unwrap();
    let msgs = poll_n(&mut c, 3);
    assert_eq!(msgs[0].offset(), 2);
}

#[test]
fn retention_under_a_consumer_resets_its_position_by_policy() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open_with(
        dir.path(),
        LogConfig::default().retention_check_interval(Duration::from_millis(50)),
    )
    .unwrap();
    let t = log
        .create_topic(
            "t",
            TopicConfig::default()
                .segment_bytes(1024)
                .max_record_bytes(256)
                .retention_bytes(Some(2048)),
        )
        .unwrap();
    let value = [b'v'; 100];
    for _ in 0..10 {
        t.append("k", value).unwrap();
    }
    let tp0 = tp("t", 0);
    let mut consumers: Vec<(OffsetReset, Consumer)> = [
        OffsetReset::Earliest,
        OffsetReset::Latest,
        OffsetReset::None,
    ]
    .into_iter()
    .map(|reset| {
        let mut c = log
            .consumer_with(
                ConsumerConfig::new(format!("g-{reset:?}"))
                    .auto_offset_reset(reset)
                    .max_poll_records(5),
            )
            .unwrap();
        c.assign(std::slice::from_ref(&tp0)).unwrap();
        c.seek(&tp0, 0).unwrap();
        assert_eq!(poll_n(&mut c, 5).last().unwrap().offset(), 4);
        (reset, c)
    })
    .collect();
    // Enough appends that retention deletes the consumers' position (5).
    let p = t.partition(0).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while p.start_offset() <= 5 {
        assert!(
            Instant::now() < deadline,
            "retention never deleted offset 5"
        );
        t.append("k", value).unwrap();
    }
    let (start, end) = (p.start_offset(), p.end_offset());

    for (reset, c) in consumers.iter_mut() {
        match reset {
            OffsetReset::Earliest => {
                let msgs = c.poll(Duration::from_millis(100)).unwrap();
                assert!(!msgs.is_empty());
                assert!(
                    msgs[0].offset() >= start,
                    "Earliest: read offset {} though retention deleted everything below {start}",
                    msgs[0].offset()
                );
                assert_eq!(
                    msgs[0].offset(),
                    p.start_offset(),
                    "Earliest resets to the start"
                );
            }
            OffsetReset::Latest => {
                let msgs = c.poll(Duration::from_millis(100)).unwrap();
                assert!(msgs.is_empty(), "Latest: got {:?}", offsets_of(&msgs));
                assert_eq!(c.position(&tp0).unwrap(), end, "Latest resets to the end");
                t.append("k", "new").unwrap();
                let msgs = poll_n(c, 1);
                assert_eq!(msgs[0].offset(), end);
            }
            _ => {
                let e = expect_err(c.poll(Duration::from_millis(100)), "None after retention");
                assert!(matches!(e, Error::NoOffset { .. }), "{e:?}");
            }
        }
    }
}

// ---------------------------------------------------- seek and control

#[test]
fn seek_moves_the_position_and_rejects_offsets_outside_the_stored_range() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir);
    let t = topic(&log, "t", 2);
    fill(&t, 10);
    let tp0 = tp("t", 0);
    let mut c = log
        .consumer_with(earliest("g").max_poll_records(3))
        .unwrap();
    c.assign(std::slice::from_ref(&tp0)).unwrap();
    assert_eq!(c.position(&tp0).unwrap(), 0);
    c.seek(&tp0, 6).unwrap();
    assert_eq!(c.position(&tp0).unwrap(), 6);
    assert_eq!(offsets_of(&poll_n(&mut c, 3)), vec![(0, 6), (0, 7), (0, 8)]);
    assert_eq!(c.position(&tp0).unwrap(), 9);
    c.seek(&tp0, 10).unwrap(); // the end is a valid position
    assert!(c.poll(Duration::from_millis(20)).unwrap().is_empty());

    let e = expect_err(c.seek(&tp0, 11), "seek past the end");
    assert!(
        matches!(e, Error::OffsetOutOfRange { offset: 11, .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("t-0"), "{e}");
    assert_eq!(
        c.position(&tp0).unwrap(),
        10,
        "a failed seek leaves the position"
    );
    let e = expect_err(c.seek(&tp("t", 1), 0), "seek on a partition not assigned");
    assert!(matches!(e, Error::NotAssigned { .. }), "{e:?}");
    let e = expect_err(
        c.position(&tp("t", 1)),
        "position of a partition not assigned",
    );
    assert!(matches!(e, Error::NotAssigned { .. }), "{e:?}");
}

#[test]
fn seek_to_beginning_end_and_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir);
    let t = topic(&log, "t", 2);
    for p in 0..2 {
        for i in 0..10i64 {
            t.send(
                Record::new(format!("{i}"))
                    .partition(p)
                    .timestamp(1_000 * (i + 1)),
            )
            .unwrap();
        }
    }
    let (tp0, tp1) = (tp("t", 0), tp("t", 1));
    let mut c = log.consumer("g").unwrap();
    c.assign(&[tp0.clone(), tp1.clone()]).unwrap();
    assert_eq!(c.position(&tp0).unwrap(), 10, "Latest");

    c.seek_to_beginning(&[]).unwrap(); // empty = every assigned partition
    assert_eq!(
        (c.position(&tp0).unwrap(), c.position(&tp1).unwrap()),
        (0, 0)
    );
    c.seek_to_end(std::slice::from_ref(&tp1)).unwrap();
    assert_eq!(
        (c.position(&tp0).unwrap(), c.position(&tp1).unwrap()),
        (0, 10)
    );
    c.seek_to_end(&[]).unwrap();
    assert_eq!(c.position(&tp0).unwrap(), 10);
    c.seek_to_beginning(std::slice::from_ref(&tp0)).unwrap();
    assert_eq!(
        (c.position(&tp0).unwrap(), c.position(&tp1).unwrap()),
        (0, 10)
    );

    c.seek_to_timestamp(&tp0, 4_500).unwrap();
    assert_eq!(
        c.position(&tp0).unwrap(),
        4,
        "first record with timestamp >= 4500"
    );
    c.seek_to_timestamp(&tp1, 3_000).unwrap();
    assert_eq!(c.position(&tp1).unwrap(), 2, "timestamps equal count");
    let msgs = poll_n(&mut c, 14);
    assert_eq!(msgs.iter().filter(|m| m.partition() == 0).count(), 6);
    c.seek_to_timestamp(&tp0, 99_000).unwrap();
    assert_eq!(
        c.position(&tp0).unwrap(),
        10,
        "newer than everything: the end"
    );
    c.seek_to_timestamp(&tp0, 0).unwrap();
    assert_eq!(c.position(&tp0).unwrap(), 0);

    let e = expect_err(
        c.seek_to_beginning(&[tp("t", 5)]),
        "seek_to_beginning of a partition not assigned",
    );
    assert!(matches!(e, Error::NotAssigned { .. }), "{e:?}");
}

#[test]
fn pause_stops_and_resume_restarts_a_partition() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir);
    let t = topic(&log, "t", 2);
    let mut c = log.consumer_with(earliest("g")).unwrap();
    c.assign(&[tp("t", 0), tp("t", 1)]).unwrap();
    c.pause(&[tp("t", 0)]);
    fill(&t, 5);
    let msgs = poll_n(&mut c, 5);
    assert!(
        msgs.iter().all(|m| m.partition() == 1),
        "{:?}",
        offsets_of(&msgs)
    );
    assert!(
        c.poll(Duration::from_millis(50)).unwrap().is_empty(),
        "paused partition read"
    );
    assert_eq!(c.assignment().len(), 2, "a paused partition stays assigned");
    c.resume(&[tp("t", 0)]);
    let msgs = poll_n(&mut c, 5);
    assert!(msgs.iter().all(|m| m.partition() == 0));
    assert_eq!(
        msgs[0].offset(),
        0,
        "resume continues where the partition stopped"
    );
}

#[test]
fn a_paused_partition_does_not_wake_poll() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir);
    let t = topic(&log, "t", 1);
    let mut c = log.consumer_with(earliest("g")).unwrap();
    c.assign(&[tp("t", 0)]).unwrap();
    c.pause(&[tp("t", 0)]);
    let t2 = t.clone();
    let h = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        t2.append("k", "v").unwrap();
    });
    let msgs = c.poll(Duration::from_millis(300)).unwrap();
    h.join().unwrap();
    assert!(
        msgs.is_empty(),
        "poll returned records of a paused partition"
    );
}

#[test]
fn poll_is_fair_across_partitions_and_keeps_offset_order() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir);
    let t = topic(&log, "t", 4);
    fill(&t, 100);
    let mut c = log
        .consumer_with(earliest("g").max_poll_records(20))
        .unwrap();
    c.subscribe(&["t"]).unwrap();
    let mut next = [0u64; 4];
    let mut polls = 0;
    while next.iter().sum::<u64>() < 400 {
        let msgs = c.poll(Duration::from_millis(50)).unwrap();
        polls += 1;
        assert!(
            msgs.len() <= 20,
            "poll returned {} > max_poll_records",
            msgs.len()
        );
        let parts: BTreeSet<u32> = msgs.iter().map(Message::partition).collect();
        if next.iter().all(|&n| n < 90) {
            assert_eq!(
                parts.len(),
                4,
                "poll #{polls} starved a partition: {parts:?}"
            );
        }
        for m in msgs {
            let p = m.partition() as usize;
            assert_eq!(m.offset(), next[p], "t-{p} out of order");
            next[p] += 1;
        }
        assert!(polls < 100, "400 records took over 100 polls");
    }
}

// --------------------------------------------------- manual assignment

#[test]
fn manual_assignment_commits_for_the_group_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir);
    let t = topic(&log, "t", 3);
    fill(&t, 10);
    let mut c = log
        .consumer_with(
            earliest("manual")
                .enable_auto_commit(false)
                .max_poll_records(4),
        )
        .unwrap();
    c.assign(&[tp("t", 1)]).unwrap();
    assert_eq!(
        c.member_id(),
        None,
        "a manual consumer is not a group member"
    );
    assert_eq!(c.group_id(), "manual");
    assert_eq!(c.assignment(), vec![tp("t", 1)]);
    let msgs = poll_n(&mut c, 4);
    assert!(msgs.iter().all(|m| m.partition() == 1));
    c.commit().unwrap();
    c.commit_offsets(&[(tp("t", 1), 6)]).unwrap();
    assert_eq!(c.committed(&tp("t", 1)).unwrap(), Some(6));
    let g = log.group("manual").unwrap();
    assert_eq!(g.committed(&tp("t", 1)).unwrap(), Some(6));
    assert!(
        g.members().is_empty(),
        "manual consumers are not listed as members"
    );
    assert!(log.groups().contains(&"manual".to_string()));
    let e = expect_err(
        c.commit_offsets(&[(tp("t", 2), 1)]),
        "manual commit of a partition not assigned",
    );
    assert!(matches!(e, Error::NotAssigned { .. }), "{e:?}");
    c.close().unwrap();

    let mut c = log.consumer("manual").unwrap();
    c.assign(&[tp("t", 1)]).unwrap();
    assert_eq!(
        c.position(&tp("t", 1)).unwrap(),
        6,
        "resumes at the committed offset"
    );
    assert_eq!(poll_n(&mut c, 4)[0].offset(), 6);
}

#[test]
fn a_manual_consumer_cannot_commit_a_partition_a_member_owns() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir);
    topic(&log, "t", 1);
    let mut member = log.consumer("g").unwrap();
    member.subscribe(&["t"]).unwrap();
    member.poll(Duration::ZERO).unwrap();
    assert_eq!(member.assignment(), vec![tp("t", 0)]);
    let mut manual = log.consumer("g").unwrap();
    manual.assign(&[tp("t", 0)]).unwrap();
    let e = expect_err(
        manual.commit_offsets(&[(tp("t", 0), 0)]),
        "manual commit of a partition a member owns",
    );
    assert!(matches!(e, Error::Fenced { .. }), "{e:?}");
}

#[test]
fn leaving_the_group_for_manual_assignment_does_not_commit_when_auto_commit_is_off() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir);
    let t = topic(&log, "t", 2);
    fill(&t, 10);
    let mut c = log
        .consumer_with(earliest("g").enable_auto_commit(false))
        .unwrap();
    c.subscribe(&["t"]).unwrap();
    poll_n(&mut c, 20); // read, not processed, not committed
    c.assign(&[tp("t", 0)]).unwrap();
    let g = log.group("g").unwrap();
    assert_eq!(
        (
            g.committed(&tp("t", 0)).unwrap(),
            g.committed(&tp("t", 1)).unwrap()
        ),
        (None, None),
        "subscribe -> assign committed positions although enable_auto_commit(false)"
    );
    poll_n(&mut c, 10);
    c.assign(&[tp("t", 1)]).unwrap();
    assert_eq!(
        g.committed(&tp("t", 0)).unwrap(),
        None,
        "assign -> assign committed positions although enable_auto_commit(false)"
    );
}

// ------------------------------------------------------------ admin view

#[test]
fn group_lag_members_and_listing() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir);
    let t = topic(&log, "t", 2);
    fill(&t, 10);
    assert!(log.groups().is_empty(), "{:?}", log.groups());
    let mut members: Vec<Consumer> = (0..2)
        .map(|_| {
            let mut c = log
                .consumer_with(earliest("g").enable_auto_commit(false))
                .unwrap();
            c.subscribe(&["t"]).unwrap();
            c
        })
        .collect();
    assert_eq!(
        log.groups(),
        vec!["g".to_string()],
        "a group with members is listed"
    );
    converge(&mut members, &all_partitions("t", 2)); // reads everything
    let g = log.group("g").unwrap();
    assert_eq!(g.id(), "g");
    let owner0 = members
        .iter_mut()
        .find(|m| m.assignment() == vec![tp("t", 0)])
        .expect("someone owns t-0");
    owner0.commit_offsets(&[(tp("t", 0), 4)]).unwrap();

    let lag = g.lag().unwrap();
    assert_eq!(lag.len(), 2, "{lag:?}");
    assert_eq!(lag[0].topic_partition, tp("t", 0));
    assert_eq!(
        (lag[0].committed, lag[0].end_offset, lag[0].lag),
        (Some(4), 10, 6)
    );
    assert_eq!(lag[1].topic_partition, tp("t", 1));
    assert_eq!(
        (lag[1].committed, lag[1].end_offset, lag[1].lag),
        (None, 10, 10)
    );

    let described = g.members();
    assert_eq!(described.len(), 2);
    let mut owned: Vec<TopicPartition> = described
        .iter()
        .flat_map(|d| d.assignment.clone())
        .collect();
    owned.sort();
    assert_eq!(owned, vec![tp("t", 0), tp("t", 1)]);

    drop(members);
    assert!(g.members().is_empty());
    assert_eq!(
        log.groups(),
        vec!["g".to_string()],
        "committed offsets keep it listed"
    );
    assert!(log.group("nobody").unwrap().lag().unwrap().is_empty());
    assert!(log.group("nobody").unwrap().members().is_empty());
}

#[test]
fn reset_offsets_is_refused_while_members_exist_and_works_after_they_close() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir);
    let t = topic(&log, "t", 2);
    for p in 0..2 {
        for i in 0..10i64 {
            t.send(Record::new("v").partition(p).timestamp(1_000 * (i + 1)))
                .unwrap();
        }
    }
    let mut c = log.consumer_with(earliest("g")).unwrap();
    c.subscribe(&["t"]).unwrap();
    poll_n(&mut c, 20);
    c.commit().unwrap();
    let g = log.group("g").unwrap();
    let e = expect_err(
        g.reset_offsets(&[], ResetTo::Earliest),
        "reset with a member",
    );
    assert!(
        matches!(e, Error::GroupNotEmpty { members: 1, .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("\"g\""), "{e}");
    assert_eq!(
        g.committed(&tp("t", 0)).unwrap(),
        Some(10),
        "a refused reset changed offsets"
    );
    c.close().unwrap();

    let committed = |p| g.committed(&tp("t", p)).unwrap();
    g.reset_offsets(&[], ResetTo::Earliest).unwrap();
    assert_eq!((committed(0), committed(1)), (Some(0), Some(0)));
    g.reset_offsets(&[tp("t", 1)], ResetTo::Latest).unwrap();
    assert_eq!((committed(0), committed(1)), (Some(0), Some(10)));
    g.reset_offsets(&[tp("t", 0)], ResetTo::Offset(7)).unwrap();
    assert_eq!(committed(0), Some(7));
    g.reset_offsets(&[], ResetTo::Timestamp(3_500)).unwrap();
    assert_eq!((committed(0), committed(1)), (Some(3), Some(3)));
    let e = expect_err(
        g.reset_offsets(&[tp("t", 0)], ResetTo::Offset(11)),
        "reset beyond the end",
    );
    assert!(matches!(e, Error::OffsetOutOfRange { .. }), "{e:?}");
    assert_eq!(committed(0), Some(3));

    // A new member starts where the reset put the group.
    let mut c = log.consumer("g").unwrap();
    c.subscribe(&["t"]).unwrap();
    let msgs = poll_n(&mut c, 14);
    assert!(msgs.iter().all(|m| m.offset() >= 3));
}

#[test]
fn deleting_a_topic_removes_its_committed_offsets() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(&dir);
        let a = topic(&log, "a", 1);
        let b = topic(&log, "b", 1);
        fill(&a, 5);
        fill(&b, 5);
        for (group, topics) in [
            ("both", vec![tp("a", 0), tp("b", 0)]),
            ("only-a", vec![tp("a", 0)]),
        ] {
            let mut c = log.consumer_with(earliest(group)).unwrap();
            c.assign(&topics).unwrap();
            poll_n(&mut c, 5 * topics.len());
            c.commit().unwrap();
        }
        assert_eq!(log.groups(), vec!["both".to_string(), "only-a".into()]);
        log.delete_topic("a").unwrap();
        assert_eq!(
            log.group("both").unwrap().committed(&tp("a", 0)).unwrap(),
            None
        );
        assert_eq!(
            log.group("both").unwrap().committed(&tp("b", 0)).unwrap(),
            Some(5)
        );
        assert_eq!(
            log.groups(),
            vec!["both".to_string()],
            "only-a has nothing left"
        );
        log.close().unwrap();
    }
    let log = open(&dir);
    assert_eq!(
        log.group("both").unwrap().committed(&tp("a", 0)).unwrap(),
        None,
        "after reopen"
    );
    assert_eq!(
        log.group("both").unwrap().committed(&tp("b", 0)).unwrap(),
        Some(5)
    );
    // A topic recreated under the same name starts with no committed offsets.
    let a = topic(&log, "a", 1);
    fill(&a, 5);
    let mut c = log.consumer_with(earliest("only-a")).unwrap();
    c.subscribe(&["a"]).unwrap();
    assert_eq!(poll_n(&mut c, 5)[0].offset(), 0);
}

#[test]
fn deleting_a_topic_under_live_consumers_does_not_bring_its_offsets_back() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir);
    let t = topic(&log, "t", 1);
    fill(&t, 10);
    // Default config: auto-commit on, as most applications run.
    let mut member = log.consumer_with(earliest("member")).unwrap();
    member.subscribe(&["t"]).unwrap();
    poll_n(&mut member, 10);
    member.commit().unwrap();
    let mut manual = log.consumer_with(earliest("manual")).unwrap();
    manual.assign(&[tp("t", 0)]).unwrap();
    poll_n(&mut manual, 10);
    manual.commit().unwrap();

    log.delete_topic("t").unwrap();
    for _ in 0..3 {
        member.poll(Duration::from_millis(10)).unwrap();
        let _ = manual.poll(Duration::from_millis(10));
    }
    assert!(member.assignment().is_empty(), "{:?}", member.assignment());
    manual.close().unwrap_or(());
    for group in ["member", "manual"] {
        assert_eq!(
            log.group(group).unwrap().committed(&tp("t", 0)).unwrap(),
            None,
            "group {group:?}: a consumer re-committed an offset of the deleted topic"
        );
    }

    // Why it matters: a topic recreated under the same name would be read
    // from the stale offset, skipping its first records.
    let t = topic(&log, "t", 1);
    fill(&t, 20);
    drop(member);
    let mut c = log.consumer_with(earliest("member")).unwrap();
    c.subscribe(&["t"]).unwrap();
    assert_eq!(
        poll_n(&mut c, 20)[0].offset(),
        0,
        "the recreated topic was not read from its start"
    );
}

#[test]
fn a_member_reads_a_topic_deleted_and_recreated_between_its_polls_from_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir);
    let t = topic(&log, "t", 1);
    fill(&t, 10);
    let mut c = log.consumer_with(earliest("g")).unwrap();
    c.subscribe(&["t"]).unwrap();
    poll_n(&mut c, 10);
    c.commit().unwrap();

    log.delete_topic("t").unwrap();
    let t = topic(&log, "t", 1);
    fill(&t, 5);
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(3);
    while got.len() < 5 && Instant::now() < deadline {
        got.extend(offsets_of(&c.poll(Duration::from_millis(50)).unwrap()));
    }
    assert_eq!(
        got,
        (0..5).map(|o| (0, o)).collect::<Vec<_>>(),
        "records of the recreated topic the subscribed member received within 3 s"
    );
    c.commit().unwrap();
    assert_eq!(c.committed(&tp("t", 0)).unwrap(), Some(5));
}

// -------------------------------------------------------------- bad input

#[test]
fn unknown_topics_and_partitions_are_rejected_by_subscribe_and_assign() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir);
    topic(&log, "t", 2);
    let mut c = log.consumer("g").unwrap();
    let e = expect_err(c.subscribe(&["t", "nope"]), "subscribe to an unknown topic");
    assert!(
        matches!(&e, Error::UnknownTopic { topic, .. } if topic == "nope"),
        "{e:?}"
    );
    assert!(e.to_string().contains("nope"), "{e}");
    assert_eq!(
        c.member_id(),
        None,
        "a failed subscribe must not join the group"
    );
    assert!(log.group("g").unwrap().members().is_empty());

    let e = expect_err(c.assign(&[tp("nope", 0)]), "assign of an unknown topic");
    assert!(matches!(e, Error::UnknownTopic { .. }), "{e:?}");
    let e = expect_err(
        c.assign(&[tp("t", 0), tp("t", 2)]),
        "assign of an unknown partition",
    );
    assert!(
        matches!(e, Error::UnknownPartition { partition: 2, .. }),
        "{e:?}"
    );
    assert!(
        c.assignment().is_empty(),
        "a failed assign assigned {:?}",
        c.assignment()
    );
}

#[test]
fn committing_a_partition_not_owned_fails_with_not_assigned() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir);
    topic(&log, "t", 2);
    let mut members = group_of(&log, "g", Assignor::Range, &["t"], 2);
    converge(&mut members, &all_partitions("t", 2));
    let owner_of_1 = members[0].assignment() == vec![tp("t", 1)];
    let not_owner = &mut members[usize::from(owner_of_1)];
    let e = expect_err(
        not_owner.commit_offsets(&[(tp("t", 1), 0)]),
        "commit of another member's partition",
    );
    assert!(
        matches!(e, Error::NotAssigned { partition: 1, .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("t-1"), "{e}");
    assert_eq!(
        log.group("g").unwrap().committed(&tp("t", 1)).unwrap(),
        None
    );
    let e = expect_err(
        not_owner.commit_offsets(&[(tp("t", 9), 0)]),
        "commit of a partition that does not exist",
    );
    assert!(matches!(e, Error::NotAssigned { .. }), "{e:?}");
}

#[test]
fn invalid_group_ids_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir);
    let long = "g".repeat(250);
    for bad in ["", "tab\there", "nul\0", long.as_str()] {
        let e = expect_err(log.consumer(bad), &format!("consumer({bad:?})"));
        assert!(
            matches!(e, Error::InvalidGroupId { .. }),
            "consumer({bad:?}): {e:?}"
        );
        let e = expect_err(log.group(bad), &format!("group({bad:?})"));
        assert!(
            matches!(e, Error::InvalidGroupId { .. }),
            "group({bad:?}): {e:?}"
        );
    }
    log.consumer(&"g".repeat(249))
        .expect("249 characters are fine");
    log.consumer("billing.v2-EU_1 with spaces")
        .expect("printable ids are fine");
}

#[test]
fn bad_configs_and_closed_consumers_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir);
    topic(&log, "t", 1);
    let e = expect_err(
        log.consumer_with(ConsumerConfig::new("g").max_poll_records(0)),
        "max_poll_records(0)",
    );
    assert!(matches!(e, Error::InvalidConfig { .. }), "{e:?}");
    let e = expect_err(
        log.consumer_with(ConsumerConfig::new("g").session_timeout(Duration::ZERO)),
        "session_timeout(0)",
    );
    assert!(matches!(e, Error::InvalidConfig { .. }), "{e:?}");

    let mut c = log.consumer("g").unwrap();
    c.subscribe(&["t"]).unwrap();
    c.close().unwrap();
    c.close().expect("a second close is a no-op");
    let e = expect_err(c.poll(Duration::ZERO), "poll after close");
    assert!(matches!(e, Error::Closed { .. }), "{e:?}");
    let e = expect_err(c.commit(), "commit after close");
    assert!(matches!(e, Error::Closed { .. }), "{e:?}");

    let mut c = log.consumer("g").unwrap();
    c.subscribe(&["t"]).unwrap();
    log.close().unwrap();
    let e = expect_err(c.poll(Duration::ZERO), "poll after the log closed");
    assert!(matches!(e, Error::Closed { .. }), "{e:?}");
    let e = expect_err(log.consumer("g"), "consumer() after the log closed");
    assert!(matches!(e, Error::Closed { .. }), "{e:?}");
}

#[test]
fn consumer_is_send_and_handles_are_debug() {
    fn send<T: Send>() {}
    fn share<T: Send + Sync + Clone>() {}
    send::<Consumer>();
    share::<brook::ConsumerGroup>();
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir);
    let c = log.consumer("g").unwrap();
    assert!(format!("{c:?}").contains("\"g\""));
    assert!(format!("{:?}", log.group("g").unwrap()).contains("\"g\""));
}
