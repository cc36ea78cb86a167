//! Which deliveries the fake loses, and how: a seeded xorshift draws for
//! each accepted note, so the same test loses the same notes on every run.

use super::Loss;
use super::ids::splitmix;

/// The modes lost deliveries cycle through, in order.
pub(super) const LOSS_CYCLE: [Loss; 3] = [
    Loss::NoAnswer,
    Loss::Timeout,
    Loss::ServerErrorThenLostRetry,
];

/// The plan set by [`FakeCobalt::lose_share`](super::FakeCobalt::lose_share).
pub(super) struct LossPlan {
    share: f64,
    rng: XorShift,
    /// Deliveries lost so far: picks the next mode of [`LOSS_CYCLE`].
    lost: usize,
}

impl LossPlan {
    pub(super) fn new(share: f64, seed: u64) -> Self {
        Self {
            share,
            rng: XorShift::new(seed),
            lost: 0,
        }
    }

    /// Whether the next delivery is lost, and how.
    pub(super) fn draw(&mut self) -> Loss {
        if self.rng.next_f64() >= self.share {
            return Loss::None;
        }
        self.lost += 1;
        LOSS_CYCLE[(self.lost - 1) % LOSS_CYCLE.len()]
    }
}

/// xorshift64: tiny, deterministic, and good enough to pick lost deliveries.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        // The state must not be zero; splitmix spreads small seeds.
        Self(splitmix(seed) | 1)
    }

    /// Uniform in 0.0..1.0.
    fn next_f64(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}
