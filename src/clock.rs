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
//!   that reading ends no later than it would from the clock's.
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
//!   clock source is `tsc`: the kernel has then checked that the counters
//!   tick at a constant rate, do not stop in idle states and agree across
//!   CPUs. Anywhere else every call reads the clock.
//!
//! The clock being set (or stepped by NTP) shows after at most the rest of
//! the current millisecond, as with any read just before the change. And
//! should the counter's rate change after all (a VM moved to another host
//! without rate scaling), a cached value is still at most one window old:
//! under a millisecond at the measured rate, longer only in proportion to
//! the change.

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
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;

    thread_local! {
        /// Counter values `start..end` during which the wall clock reads
        /// `ms` (empty until the first read).
        static WINDOW: Cell<(u64, u64, i64)> = const { Cell::new((0, 0, 0)) };
    }

    /// The first well-bracketed (counter, `CLOCK_MONOTONIC_RAW` ns) pair,
    /// the start of the rate's measurement; 0 while there is none.
    static FIRST_TICKS: AtomicU64 = AtomicU64::new(0);
    static FIRST_NS: AtomicU64 = AtomicU64::new(0);
    /// Counter ticks per nanosecond, in 1/2^[`RATE_SHIFT`] units; 0 until
    /// measured.
    static TICKS_PER_NS: AtomicU64 = AtomicU64::new(0);
    const RATE_SHIFT: u32 = 32;
    /// How long both clocks are watched before the rate counts.
    const CALIBRATION_NS: u64 = 50_000_000;
    /// Widest bracket of counter readings around a clock reading that the
    /// rate's measurement uses (100 µs at 1 GHz).
    const BRACKET_TICKS: u64 = 100_000;

    #[inline]
    pub(super) fn now_ms() -> i64 {
        let tsc = ticks();
        let (start, end, ms) = WINDOW.with(Cell::get);
        // `start <= tsc < end`; a `tsc` below `start` wraps to a huge
        // difference.
        if tsc.wrapping_sub(start) < end.wrapping_sub(start) {
            return ms;
        }
        read_and_remember(tsc)
    }

    #[inline]
    fn ticks() -> u64 {
        // SAFETY: `rdtsc` is part of every x86-64 CPU; it reads a counter
        // and touches no memory.
        unsafe { core::arch::x86_64::_rdtsc() }
    }

    /// Whether the kernel keeps time with the time-stamp counter.
    fn counter_trusted() -> bool {
        static TRUSTED: OnceLock<bool> = OnceLock::new();
        *TRUSTED.get_or_init(|| {
            std::fs::read_to_string(
                "/sys/devices/system/clocksource/clocksource0/current_clocksource",
            )
            .is_ok_and(|s| s.trim() == "tsc")
        })
    }

    /// Reads the wall clock; `tsc` was read just before. Remembers the
    /// window in which the millisecond stays the same, once the counter's
    /// rate is known.
    #[cold]
    fn read_and_remember(tsc: u64) -> i64 {
        let ns = super::wall_ns();
        let ms = ns / 1_000_000;
        if !counter_trusted() {
            return ms;
        }
        let mut rate = TICKS_PER_NS.load(Ordering::Relaxed);
        if rate == 0 {
            rate = measure_rate();
        }
        if rate != 0 {
            let left_ns = (1_000_000 - ns % 1_000_000) as u64;
            let window = ((left_ns / 8 * 7) as u128 * rate as u128) >> RATE_SHIFT;
            let end = tsc.wrapping_add(u64::try_from(window).unwrap_or(0));
            WINDOW.with(|w| w.set((tsc, end, ms)));
        }
        ms
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
        let first_ns = FIRST_NS.load(Ordering::Acquire);
        if first_ns == 0 {
            // One thread's pair wins; its counter value is stored before
            // the flag (`FIRST_NS`) is released.
            if FIRST_TICKS
                .compare_exchange(0, before, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                FIRST_NS.store(ns, Ordering::Release);
            }
            return 0;
        }
        let first_ticks = FIRST_TICKS.load(Ordering::Relaxed);
        let (Some(dns), Some(dticks)) = (ns.checked_sub(first_ns), before.checked_sub(first_ticks))
        else {
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
    pub(super) fn cached() -> bool {
        TICKS_PER_NS.load(Ordering::Relaxed) != 0 && {
            let (start, end, _) = WINDOW.with(Cell::get);
            end > start
        }
    }

    #[cfg(test)]
    pub(super) fn trusted() -> bool {
        counter_trusted()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// A value `now_ms` returned is never before the clock's reading just
    /// before the call, nor after its reading just after; checked over a
    /// few hundred millisecond boundaries, so with the cached windows in
    /// use once the rate is measured.
    #[test]
    fn every_reading_lies_between_the_clocks_readings_around_it() {
        let started = Instant::now();
        let mut calls = 0u64;
        while started.elapsed() < Duration::from_millis(300) {
            let before = wall_ns() / 1_000_000;
            let got = now_ms();
            let after = wall_ns() / 1_000_000;
            assert!(
                before <= got && got <= after,
                "{before} <= {got} <= {after} (call {calls})"
            );
            calls += 1;
        }
        #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
        if counter::trusted() {
            assert!(counter::cached(), "rate measured and a window remembered");
        }
    }

    /// Threads that start after the rate is known get windows of their own.
    #[test]
    fn threads_agree_with_the_clock() {
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(|| {
                    let started = Instant::now();
                    while started.elapsed() < Duration::from_millis(100) {
                        let before = wall_ns() / 1_000_000;
                        let got = now_ms();
                        let after = wall_ns() / 1_000_000;
                        assert!(
                            before <= got && got <= after,
                            "{before} <= {got} <= {after}"
                        );
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }
}
