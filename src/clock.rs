//! The wall clock in milliseconds, for record timestamps.
//!
//! Every record appended without a timestamp reads the clock, and on the
//! development VM `clock_gettime(CLOCK_REALTIME)` costs 41–44 ns: about a
//! quarter of a single append. A Kafka timestamp has millisecond resolution, so
//! most of those reads return what the thread's previous read did. Each
//! thread therefore remembers, after a real read, until which value of the
//! CPU's time-stamp counter (`rdtsc`, 20 ns here) the millisecond cannot
//! have changed, and returns the remembered value while the counter is
//! below it. (`compare` row 1 in three alternating pairs: 5.69–6.39 →
//! 7.01–7.61 M/s.)
//!
//! Why the cached value is never wrong:
//!
//! - The counter is read *before* the clock, so the moment it was read is
//!   no later than the time the clock returned: a window measured from
//!   that reading ends no later than it would from the clock's. (The
//!   vDSO's `clock_gettime` reads the counter after a fence, so the plain
//!   `rdtsc` before it cannot be executed after it.)
//! - The window covers 7/8 of what was left of the millisecond, converted
//!   to counter ticks with a rate measured against `CLOCK_MONOTONIC_RAW`
//!   (which no one sets or slews) over at least 50 ms, from clock readings
//!   each bracketed by two counter readings at most 100,000 ticks apart (a
//!   thread preempted in between does not skew it): at most 0.4 % off at
//!   1 GHz, while the rate would have to be off by more than 12 % for a
//!   window to reach into the next millisecond.
//! - A counter that reads below the window's start (a thread moved to a
//!   CPU whose counter lags) or past its end takes a real read.
//! - The fast path is used only on x86-64 Linux when the kernel's own
//!   clock source is `tsc` (looked up once, before the first `rdtsc`):
//!   the kernel has then checked that the counters tick at a constant
//!   rate, do not stop in idle states and agree across CPUs. Anywhere
//!   else every call reads the clock, after one relaxed load.
//! - Each real read also checks the rate: the ticks since the thread's
//!   previous real read (200 µs to 1 s before) must match the wall-clock
//!   time between them within 1/16, or the rate is dropped and measured
//!   again (50 ms of real reads). A counter whose rate changed after the
//!   measurement (a VM moved to another host) thus costs at most the
//!   window in use when it changed: a value up to a millisecond late, once
//!   per thread. The kernel's choice of clock source is read once; should
//!   it stop trusting the counter later, only this check notices, and only
//!   if the counter's rate changes (a counter that stopped dead would keep
//!   a thread on its last millisecond).
//!
//! The clock being set (or stepped by NTP) shows after at most the rest of
//! the current millisecond, as with any read just before the change (and
//! makes the next check measure the rate again).

/// Milliseconds since the Unix epoch (0 for a clock set before it).
#[inline]
pub(crate) fn now_ms() -> i64 {
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    {
        counter::now_ms()
    }
    #[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
    {
        wall_ns() / 1_000_000
    }
}

/// Nanoseconds since the Unix epoch (0 for a clock set before it).
fn wall_ns() -> i64 {
    clock_ns(
        #[cfg(unix)]
        libc::CLOCK_REALTIME,
    )
}

/// Nanoseconds of `clock` (only the wall clock where there is no
/// `clock_gettime`).
fn clock_ns(#[cfg(unix)] clock: libc::clockid_t) -> i64 {
    #[cfg(unix)]
    {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec, and the clocks asked
        // for are supported everywhere; on the (impossible) failure `ts`
        // stays 0.
        unsafe { libc::clock_gettime(clock, &mut ts) };
        // The casts are for 32-bit targets, where both fields are narrower.
        #[allow(clippy::unnecessary_cast)]
        let ns = (ts.tv_sec as i64)
            .saturating_mul(1_000_000_000)
            .saturating_add(ts.tv_nsec as i64);
        ns.max(0)
    }
    #[cfg(not(unix))]
    {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
    }
}

/// The cached windows (see the module docs).
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod counter {
    use std::cell::Cell;
    use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
    use std::sync::Mutex;

    thread_local! {
        /// The thread's last real read: the counter just before it, the
        /// counter value where its window ends (`start..end`, empty until
        /// the rate is known), its millisecond, and its nanoseconds.
        static LAST: Cell<Read> = const { Cell::new(Read { start: 0, end: 0, ms: 0, ns: 0 }) };
    }

    #[derive(Clone, Copy)]
    struct Read {
        start: u64,
        end: u64,
        ms: i64,
        ns: i64,
    }

    /// Whether the counter may be used: [`UNKNOWN`] until the first call
    /// looks at the kernel's clock source.
    static STATE: AtomicU8 = AtomicU8::new(UNKNOWN);
    const UNKNOWN: u8 = 0;
    const TRUSTED: u8 = 1;
    const UNTRUSTED: u8 = 2;

    /// Counter ticks per nanosecond, in 1/2^[`RATE_SHIFT`] units; 0 until
    /// measured (and again after a check finds it wrong).
    static TICKS_PER_NS: AtomicU64 = AtomicU64::new(0);
    const RATE_SHIFT: u32 = 32;
    /// The first well-bracketed (counter, `CLOCK_MONOTONIC_RAW` ns) pair
    /// of the rate's measurement (slow path only).
    static FIRST: Mutex<Option<(u64, u64)>> = Mutex::new(None);
    /// How long both clocks are watched before the rate counts.
    const CALIBRATION_NS: u64 = 50_000_000;
    /// Widest bracket of counter readings around a clock reading that the
    /// rate's measurement uses (100 µs at 1 GHz).
    const BRACKET_TICKS: u64 = 100_000;
    /// Shortest time between two real reads of a thread that checks the
    /// rate (shorter spans are dominated by the reads' own skew).
    const CHECK_NS: i64 = 200_000;

    #[inline]
    pub(super) fn now_ms() -> i64 {
        if STATE.load(Ordering::Relaxed) != TRUSTED {
            return untrusted();
        }
        let tsc = ticks();
        let last = LAST.with(Cell::get);
        // `start <= tsc < end`; a `tsc` below `start` wraps to a huge
        // difference.
        if tsc.wrapping_sub(last.start) < last.end.wrapping_sub(last.start) {
            return last.ms;
        }
        read_and_remember(tsc, last)
    }

    /// A real read, deciding first (once) whether the counter may be used.
    #[cold]
    fn untrusted() -> i64 {
        if STATE.load(Ordering::Relaxed) == UNKNOWN {
            let tsc = std::fs::read_to_string(
                "/sys/devices/system/clocksource/clocksource0/current_clocksource",
            )
            .is_ok_and(|s| s.trim() == "tsc");
            STATE.store(if tsc { TRUSTED } else { UNTRUSTED }, Ordering::Relaxed);
        }
        super::wall_ns() / 1_000_000
    }

    #[inline]
    fn ticks() -> u64 {
        // SAFETY: `rdtsc` is part of every x86-64 CPU; it reads a counter
        // and touches no memory. (Only called once the kernel is known to
        // keep time with it, so a process that disabled it for itself with
        // `PR_SET_TSC` would fault in the vDSO's clock reads as well.)
        unsafe { core::arch::x86_64::_rdtsc() }
    }

    /// Reads the wall clock; `tsc` was read just before, `last` is the
    /// thread's previous read. Checks the rate against the time since
    /// `last` and remembers the window in which the millisecond stays the
    /// same, once the rate is known.
    #[cold]
    fn read_and_remember(tsc: u64, last: Read) -> i64 {
        let ns = super::wall_ns();
        let ms = ns / 1_000_000;
        let mut rate = TICKS_PER_NS.load(Ordering::Relaxed);
        if rate != 0 && !agrees(rate, last, tsc, ns) {
            // The counter no longer ticks at the measured rate (a VM moved
            // to another host, say), or the wall clock was set: measure
            // again before trusting a window.
            forget_rate();
            rate = 0;
        }
        if rate == 0 {
            rate = measure_rate();
        }
        let mut end = tsc;
        if rate != 0 {
            let left_ns = (1_000_000 - ns % 1_000_000) as u64;
            let window = ((left_ns / 8 * 7) as u128 * rate as u128) >> RATE_SHIFT;
            end = tsc.wrapping_add(u64::try_from(window).unwrap_or(0));
        }
        LAST.with(|l| {
            l.set(Read {
                start: tsc,
                end,
                ms,
                ns,
            })
        });
        ms
    }

    /// Whether the ticks since the thread's previous real read match the
    /// wall-clock time since then at `rate`, within 1/16 (spans too short
    /// or too long to tell pass).
    fn agrees(rate: u64, last: Read, tsc: u64, ns: i64) -> bool {
        let span = ns - last.ns;
        if last.ns == 0 || !(CHECK_NS..=1_000_000_000).contains(&span) {
            return true;
        }
        let expected = ((span as u128 * rate as u128) >> RATE_SHIFT) as u64;
        let ticks = tsc.wrapping_sub(last.start);
        ticks.abs_diff(expected) <= expected / 16
    }

    fn forget_rate() {
        let mut first = FIRST.lock().unwrap_or_else(|e| e.into_inner());
        *first = None;
        TICKS_PER_NS.store(0, Ordering::Relaxed);
    }

    /// The counter's rate (see [`TICKS_PER_NS`]), measured between the
    /// first well-bracketed pair seen and one at least [`CALIBRATION_NS`]
    /// later; 0 until then.
    fn measure_rate() -> u64 {
        let before = ticks();
        let ns = super::clock_ns(libc::CLOCK_MONOTONIC_RAW) as u64;
        if ticks().wrapping_sub(before) > BRACKET_TICKS || ns == 0 {
            return 0;
        }
        let mut first = FIRST.lock().unwrap_or_else(|e| e.into_inner());
        let Some((first_ticks, first_ns)) = *first else {
            *first = Some((before, ns));
            return 0;
        };
        let (Some(dns), Some(dticks)) = (ns.checked_sub(first_ns), before.checked_sub(first_ticks))
        else {
            // Counters that disagree across CPUs: start again.
            *first = Some((before, ns));
            return 0;
        };
        if dns < CALIBRATION_NS {
            return 0;
        }
        let rate = u64::try_from(((dticks as u128) << RATE_SHIFT) / dns as u128).unwrap_or(0);
        TICKS_PER_NS.store(rate, Ordering::Relaxed);
        rate
    }

    #[cfg(test)]
    pub(super) fn trusted() -> bool {
        let _ = now_ms();
        STATE.load(Ordering::Relaxed) == TRUSTED
    }

    /// Whether the calling thread's next `now_ms` could be answered from a
    /// window (the rate is known and its last read left a non-empty one).
    #[cfg(test)]
    pub(super) fn cached() -> bool {
        let last = LAST.with(Cell::get);
        TICKS_PER_NS.load(Ordering::Relaxed) != 0 && last.end != last.start
    }

    /// A rate off by `factor`, as a VM moved to another host might see.
    #[cfg(test)]
    pub(super) fn skew_rate(factor: f64) {
        let rate = TICKS_PER_NS.load(Ordering::Relaxed);
        TICKS_PER_NS.store((rate as f64 * factor) as u64, Ordering::Relaxed);
    }

    #[cfg(test)]
    pub(super) fn rate() -> u64 {
        TICKS_PER_NS.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    /// The clock's tests run one at a time: one of them skews the shared
    /// rate, which the others' exact checks must not see.
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

    fn serial() -> std::sync::MutexGuard<'static, ()> {
        ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Calls `now_ms` for `how_long`, checking each value against the
    /// clock's readings just before and just after the call.
    fn check_against_the_clock(how_long: Duration) {
        let started = Instant::now();
        let mut calls = 0u64;
        while started.elapsed() < how_long {
            let before = wall_ns() / 1_000_000;
            let got = now_ms();
            let after = wall_ns() / 1_000_000;
            assert!(
                before <= got && got <= after,
                "{before} <= {got} <= {after} (call {calls})"
            );
            calls += 1;
        }
    }

    /// A value `now_ms` returned is never before the clock's reading just
    /// before the call, nor after its reading just after; checked over a
    /// few hundred millisecond boundaries, so with the cached windows in
    /// use once the rate is measured (where the kernel keeps time with the
    /// counter; elsewhere every call reads the clock).
    #[test]
    fn every_reading_lies_between_the_clocks_readings_around_it() {
        let _serial = serial();
        check_against_the_clock(Duration::from_millis(300));
        #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
        if counter::trusted() {
            assert_ne!(counter::rate(), 0, "the rate is measured within 300 ms");
            let cached = (0..100_000).any(|_| {
                let _ = now_ms();
                counter::cached()
            });
            assert!(cached, "real reads leave windows to answer from");
        }
    }

    /// Four threads at once, each with windows of its own.
    #[test]
    fn threads_agree_with_the_clock() {
        let _serial = serial();
        let threads: Vec<_> = (0..4)
            .map(|_| std::thread::spawn(|| check_against_the_clock(Duration::from_millis(100))))
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }

    /// A rate that stops matching the counter (as after a VM moved to a
    /// host whose counter ticks at another rate) is noticed at a thread's
    /// next real reads and measured again, after which every reading is
    /// right again.
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    #[test]
    fn a_rate_that_no_longer_fits_is_measured_again() {
        let _serial = serial();
        if !counter::trusted() {
            return;
        }
        check_against_the_clock(Duration::from_millis(100));
        let measured = counter::rate();
        assert_ne!(measured, 0);
        // Windows 1.5 times too long: wrong near the end of some.
        counter::skew_rate(1.5);
        let skewed = counter::rate();
        let started = Instant::now();
        while counter::rate() == skewed && started.elapsed() < Duration::from_secs(1) {
            let _ = now_ms();
        }
        assert_ne!(counter::rate(), skewed, "the skewed rate was dropped");
        check_against_the_clock(Duration::from_millis(200));
        let again = counter::rate();
        assert!(
            again.abs_diff(measured) <= measured / 100,
            "measured again: {again} against {measured}"
        );
    }
}
