//! Weighted backend choice: the order in which a new connection tries the backends.

use std::net::SocketAddr;

use gatehouse_model::L4Backend;
use rand::Rng;

/// Every backend with a weight above 0, in a random order where each position is drawn by
/// weight among those left (so the first is chosen in proportion to weight, and a failed
/// backend gives way to the others in the same proportion).
pub(crate) fn order(backends: &[L4Backend], rng: &mut impl Rng) -> Vec<SocketAddr> {
    let mut left: Vec<&L4Backend> = backends.iter().filter(|b| b.weight > 0).collect();
    let mut out = Vec::with_capacity(left.len());
    while !left.is_empty() {
        let total: u64 = left.iter().map(|b| u64::from(b.weight)).sum();
        let mut point = rng.random_range(0..total);
        let mut chosen = left.len() - 1;
        for (i, b) in left.iter().enumerate() {
            if point < u64::from(b.weight) {
                chosen = i;
                break;
            }
            point -= u64::from(b.weight);
        }
        out.push(left.swap_remove(chosen).addr);
    }
    out
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    fn b(port: u16, weight: u32) -> L4Backend {
        L4Backend { addr: SocketAddr::from(([10, 0, 0, 1], port)), weight }
    }

    #[test]
    fn first_choice_follows_weights_and_zero_never_serves() {
        let backends = [b(1, 1), b(2, 3), b(3, 0)];
        let mut rng = StdRng::seed_from_u64(7);
        let mut firsts = [0u32; 2];
        for _ in 0..4000 {
            let order = order(&backends, &mut rng);
            assert_eq!(order.len(), 2, "weight 0 is never tried");
            firsts[usize::from(order[0].port() - 1)] += 1;
        }
        // 1:3 within a few percent.
        assert!((900..1100).contains(&firsts[0]), "{firsts:?}");
        assert!(order(&[], &mut rng).is_empty());
        assert!(order(&[b(3, 0)], &mut rng).is_empty());
    }
}
