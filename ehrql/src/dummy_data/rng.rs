//! A small seeded pseudo-random generator (SplitMix64). Dummy data must be the same on every
//! run of the same definition, so the seed is fixed; statistical quality beyond "spread out"
//! does not matter here, and a few lines beat a dependency.

/// SplitMix64 (Steele, Lea and Flood, 2014).
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator seeded from `seed`'s bytes (FNV-1a), so a readable string can be the seed.
    pub fn from_seed(seed: &str) -> Rng {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in seed.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        Rng { state: hash }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A uniform float in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// A uniform integer in `lo..=hi` (`lo` if the range is empty).
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        if hi <= lo {
            return lo;
        }
        let span = (hi as i128 - lo as i128 + 1) as u128;
        (lo as i128 + (u128::from(self.next_u64()) % span) as i128) as i64
    }

    /// A uniformly chosen element (`None` if `items` is empty).
    pub fn choose<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        if items.is_empty() {
            return None;
        }
        let index = self.range(0, items.len() as i64 - 1) as usize;
        items.get(index)
    }
}

#[cfg(test)]
mod tests {
    use super::Rng;

    #[test]
    fn same_seed_same_sequence_and_ranges_are_inclusive() {
        let mut a = Rng::from_seed("BwRV3spP");
        let mut b = Rng::from_seed("BwRV3spP");
        let xs: Vec<i64> = (0..1000).map(|_| a.range(-2, 2)).collect();
        let ys: Vec<i64> = (0..1000).map(|_| b.range(-2, 2)).collect();
        assert_eq!(xs, ys);
        for v in -2..=2 {
            assert!(xs.contains(&v), "{v} never drawn");
        }
        assert!(xs.iter().all(|x| (-2..=2).contains(x)));
        assert_ne!(
            Rng::from_seed("other").next_u64(),
            Rng::from_seed("BwRV3spP").next_u64()
        );
    }
}
