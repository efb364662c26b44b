//! The one retry-with-backoff loop of nodeboot (the live-image fetch, the
//! postscripts clone, node.toml's mounts).
//!
//! An operation is tried until it succeeds, a classifier says its error is
//! not worth another attempt, or the [`Policy`] runs out (a number of
//! attempts and/or an overall deadline). Between attempts it sleeps a delay
//! that starts at `first_delay` and doubles up to `max_delay`, plus up to
//! `jitter` of it at random (so a fleet booting at once does not retry in
//! step; the delay never falls below the base, so a caller's minimum holds);
//! the sleep never reaches past the deadline. Each retry is one `warn` line
//! with what failed, the attempt, the reason and the delay.
//!
//! Semantics the callers rely on:
//! - the first attempt is always made (it is told how much time is left, which
//!   may be none: an attempt decides whether that is enough);
//! - out of attempts: give up at once, without sleeping;
//! - out of time after a sleep (the delay was cut at the deadline): give up
//!   without another attempt;
//! - [`Verdict::RetryFresh`] (the attempt made progress, e.g. received
//!   bytes) starts the backoff over at `first_delay`.
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

/// When to give up and how long to wait in between.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// Attempts in all (at least 1); `None`: only the deadline bounds them.
    pub attempts: Option<u32>,
    /// Overall budget from the start, attempts and sleeps included; `None`:
    /// only the attempts bound it.
    pub deadline: Option<Duration>,
    pub first_delay: Duration,
    /// Cap of the base delay (jitter may add to it).
    pub max_delay: Duration,
    /// Fraction of each delay added at random, 0.0 to 1.0.
    pub jitter: f64,
}

impl Policy {
    /// Retry until `deadline`, delays from `first` doubling to `max`, 10 % jitter.
    pub fn deadline(deadline: Duration, first: Duration, max: Duration) -> Policy {
        Policy {
            attempts: None,
            deadline: Some(deadline),
            first_delay: first,
            max_delay: max,
            jitter: 0.1,
        }
    }

    /// `attempts` in all, delays from `first` doubling to `max`, 10 % jitter.
    pub fn attempts(attempts: u32, first: Duration, max: Duration) -> Policy {
        Policy {
            attempts: Some(attempts),
            deadline: None,
            first_delay: first,
            max_delay: max,
            jitter: 0.1,
        }
    }
}

/// What the classifier says of a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Retrying will not help (a 404, a refused host key): stop now.
    Fatal,
    /// Worth another attempt after the next delay.
    Retry,
    /// Worth another attempt, and this one made progress: the backoff
    /// starts over.
    RetryFresh,
}

impl From<bool> for Verdict {
    /// `true`: retryable.
    fn from(retryable: bool) -> Verdict {
        if retryable {
            Verdict::Retry
        } else {
            Verdict::Fatal
        }
    }
}

/// What an attempt is told.
#[derive(Debug, Clone, Copy)]
pub struct Attempt {
    /// 1 for the first.
    pub number: u32,
    /// Time left before the deadline (`None` without one); may be zero.
    pub remaining: Option<Duration>,
}

/// Why the loop stopped without success.
#[derive(Debug)]
pub enum Failed<E> {
    /// The classifier called this error fatal.
    Fatal(E),
    /// Out of attempts or time; the last attempt's error.
    GaveUp {
        last: E,
        attempts: u32,
        elapsed: Duration,
        /// The deadline (rather than the number of attempts) ended it.
        deadline: bool,
    },
}

impl<E> Failed<E> {
    /// The error, whichever way the loop stopped.
    pub fn into_error(self) -> E {
        match self {
            Failed::Fatal(e) | Failed::GaveUp { last: e, .. } => e,
        }
    }
}

/// One retry loop's state: its start (which a caller may share between
/// loops under one deadline), the attempts made, the next delay.
#[derive(Debug)]
pub struct Retry {
    policy: Policy,
    start: Instant,
    attempts: u32,
    delay: Duration,
    rng: u64,
}

impl Retry {
    pub fn new(policy: Policy) -> Retry {
        Retry::since(policy, Instant::now())
    }

    /// A loop whose deadline counts from `start` (a fetch's sidecar and
    /// image share one).
    pub fn since(policy: Policy, start: Instant) -> Retry {
        let seed = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        Retry {
            policy,
            start,
            attempts: 0,
            delay: policy.first_delay,
            rng: seed | 1,
        }
    }

    /// Attempts made so far (on success: the attempt that succeeded).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Time left before the deadline; `None` without one.
    pub fn remaining(&self) -> Option<Duration> {
        self.policy
            .deadline
            .map(|d| d.saturating_sub(self.start.elapsed()))
    }

    /// A random fraction in [0, 1) (xorshift; quality is not the point).
    fn unit(&mut self) -> f64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Run `f` until it succeeds, `classify` calls its error fatal, or the
    /// policy runs out (see the module doc). `what` names the operation in
    /// the retry lines ("fetch", "mounting X on Y"); the reason is the
    /// error's `{:#}`.
    pub fn run<T, E: std::fmt::Display>(
        &mut self,
        what: &str,
        mut f: impl FnMut(Attempt) -> Result<T, E>,
        mut classify: impl FnMut(&E) -> Verdict,
    ) -> Result<T, Failed<E>> {
        loop {
            self.attempts += 1;
            let e = match f(Attempt {
                number: self.attempts,
                remaining: self.remaining(),
            }) {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            match classify(&e) {
                Verdict::Fatal => return Err(Failed::Fatal(e)),
                Verdict::Retry => {}
                Verdict::RetryFresh => self.delay = self.policy.first_delay,
            }
            if self.policy.attempts.is_some_and(|n| self.attempts >= n) {
                return Err(self.gave_up(e, false));
            }
            let mut wait = self
                .delay
                .mul_f64(1.0 + self.policy.jitter.clamp(0.0, 1.0) * self.unit());
            if let Some(left) = self.remaining() {
                if left.is_zero() {
                    return Err(self.gave_up(e, true));
                }
                wait = wait.min(left);
            }
            tracing::warn!(
                "{what}: attempt {}: {e:#}; retry in {:.1}s",
                self.attempts,
                wait.as_secs_f64()
            );
            std::thread::sleep(wait);
            self.delay = (self.delay * 2).min(self.policy.max_delay);
            if self.remaining().is_some_and(|l| l.is_zero()) {
                return Err(self.gave_up(e, true));
            }
        }
    }

    fn gave_up<E>(&self, last: E, deadline: bool) -> Failed<E> {
        Failed::GaveUp {
            last,
            attempts: self.attempts,
            elapsed: self.start.elapsed(),
            deadline,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn succeeds_after_retries_and_counts_attempts() {
        let mut r = Retry::new(Policy::attempts(5, ms(10), ms(20)));
        let v = r
            .run(
                "test",
                |a| {
                    if a.number < 3 {
                        Err("down")
                    } else {
                        Ok(a.number)
                    }
                },
                |_| Verdict::Retry,
            )
            .unwrap();
        assert_eq!(v, 3);
        assert_eq!(r.attempts(), 3);
    }

    #[test]
    fn a_fatal_error_stops_at_once() {
        let t = Instant::now();
        let mut r = Retry::new(Policy::attempts(5, Duration::from_secs(5), ms(5000)));
        let mut calls = 0;
        let e = r
            .run(
                "test",
                |_| -> Result<(), &str> {
                    calls += 1;
                    Err("404")
                },
                |e| (*e != "404").into(),
            )
            .unwrap_err();
        assert!(matches!(e, Failed::Fatal("404")), "{e:?}");
        assert_eq!(calls, 1);
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    }

    #[test]
    fn gives_up_after_the_attempts_with_the_last_error_and_no_last_sleep() {
        let t = Instant::now();
        let mut r = Retry::new(Policy {
            jitter: 0.0,
            ..Policy::attempts(3, ms(100), ms(150))
        });
        let e = r
            .run(
                "test",
                |a| -> Result<(), String> { Err(format!("refused {}", a.number)) },
                |_| Verdict::Retry,
            )
            .unwrap_err();
        let Failed::GaveUp {
            last,
            attempts,
            deadline,
            ..
        } = e
        else {
            panic!("{e:?}")
        };
        assert_eq!((last.as_str(), attempts, deadline), ("refused 3", 3, false));
        // 100 ms + 150 ms (capped), and no sleep after the last attempt.
        let took = t.elapsed();
        assert!(took >= ms(250) && took < ms(350), "{took:?}");
    }

    #[test]
    fn the_deadline_is_respected() {
        let t = Instant::now();
        let mut r = Retry::new(Policy {
            jitter: 0.0,
            ..Policy::deadline(ms(700), ms(100), ms(400))
        });
        let mut seen = Vec::new();
        let e = r
            .run(
                "test",
                |a| -> Result<(), String> {
                    seen.push(a.remaining.unwrap());
                    Err(format!("timeout {}", a.number))
                },
                |_| Verdict::Retry,
            )
            .unwrap_err();
        let took = t.elapsed();
        // Attempts at 0, 100, 300 ms; the 400 ms delay is cut at 700 ms.
        assert!(took >= ms(700) && took < ms(900), "{took:?}");
        let Failed::GaveUp {
            last,
            attempts,
            deadline,
            elapsed,
        } = e
        else {
            panic!("{e:?}")
        };
        assert_eq!((last.as_str(), attempts, deadline), ("timeout 3", 3, true));
        assert!(elapsed >= ms(700), "{elapsed:?}");
        // Each attempt is told the time left, less and less.
        assert!(seen.windows(2).all(|w| w[1] < w[0]), "{seen:?}");
        assert!(seen[0] <= ms(700) && seen[0] > ms(600), "{seen:?}");
    }

    #[test]
    fn the_first_attempt_is_made_even_without_time() {
        let mut r = Retry::since(
            Policy::deadline(ms(10), ms(10), ms(10)),
            Instant::now() - ms(50),
        );
        let e = r
            .run(
                "test",
                |a| -> Result<(), &str> {
                    assert_eq!(a.remaining, Some(Duration::ZERO));
                    Err("no time")
                },
                |_| Verdict::Retry,
            )
            .unwrap_err();
        assert!(
            matches!(
                e,
                Failed::GaveUp {
                    attempts: 1,
                    deadline: true,
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn progress_starts_the_backoff_over() {
        let t = Instant::now();
        let mut r = Retry::new(Policy {
            jitter: 0.0,
            ..Policy::attempts(4, ms(100), ms(1000))
        });
        // Without the reset: 100 + 200 + 400 ms; with it: 100 + 100 + 100.
        let _ = r.run(
            "test",
            |_| -> Result<(), &str> { Err("interrupted") },
            |_| Verdict::RetryFresh,
        );
        let took = t.elapsed();
        assert!(took >= ms(300) && took < ms(500), "{took:?}");
    }

    #[test]
    fn jitter_adds_at_most_its_fraction() {
        let mut r = Retry::new(Policy::attempts(1, ms(1), ms(1)));
        for _ in 0..1000 {
            let u = r.unit();
            assert!((0.0..1.0).contains(&u), "{u}");
        }
        // Two loops do not draw the same delays.
        let mut a = Retry::new(Policy::attempts(1, ms(1), ms(1)));
        let mut b = Retry::new(Policy::attempts(1, ms(1), ms(1)));
        assert_ne!(
            (0..4).map(|_| a.unit()).collect::<Vec<_>>(),
            (0..4).map(|_| b.unit()).collect::<Vec<_>>()
        );
        let t = Instant::now();
        let mut r = Retry::new(Policy {
            jitter: 0.5,
            ..Policy::attempts(3, ms(100), ms(100))
        });
        let _ = r.run(
            "test",
            |_| -> Result<(), &str> { Err("x") },
            |_| Verdict::Retry,
        );
        let took = t.elapsed();
        assert!(took >= ms(200) && took < ms(350), "{took:?}");
    }
}
