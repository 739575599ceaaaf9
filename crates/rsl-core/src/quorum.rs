//! Quorum arithmetic. Kept tiny and separate so property tests can pin it down.

/// The number of votes that make a majority of `members` voters.
///
/// Any two majorities of the same membership intersect, which is what makes a value
/// chosen by one quorum visible to every later phase 1.
pub fn majority(members: usize) -> usize {
    members / 2 + 1
}

/// The largest slot `s` such that at least `quorum` of `acked` are `>= s`.
///
/// `acked` holds each voter's highest contiguously accepted slot. Returns `None` when
/// fewer than `quorum` voters are given.
pub fn quorum_watermark(acked: &mut [u64], quorum: usize) -> Option<u64> {
    if quorum == 0 || acked.len() < quorum {
        return None;
    }
    acked.sort_unstable_by(|a, b| b.cmp(a));
    Some(acked[quorum - 1])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn majority_table() {
        for (members, expected) in [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (7, 4)] {
            assert_eq!(majority(members), expected, "members = {members}");
        }
    }

    proptest! {
        #[test]
        fn two_majorities_intersect(members in 1usize..16, a in any::<u64>(), b in any::<u64>()) {
            // Pick two arbitrary majorities as bitmasks and check they share a member.
            let q = majority(members);
            let pick = |seed: u64| {
                let mut chosen = Vec::new();
                let mut s = seed;
                while chosen.len() < q {
                    let candidate = (s % members as u64) as usize;
                    if !chosen.contains(&candidate) { chosen.push(candidate); }
                    s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                }
                chosen
            };
            let (x, y) = (pick(a), pick(b));
            prop_assert!(x.iter().any(|m| y.contains(m)));
        }

        #[test]
        fn watermark_is_reached_by_a_quorum(acked in proptest::collection::vec(0u64..100, 1..9)) {
            let quorum = majority(acked.len());
            let mut scratch = acked.clone();
            let w = quorum_watermark(&mut scratch, quorum).unwrap();
            prop_assert!(acked.iter().filter(|&&a| a >= w).count() >= quorum);
            // And it is the largest such value.
            prop_assert!(acked.iter().filter(|&&a| a > w).count() < quorum);
        }
    }
}
