//! Two profiles compared stack by stack (`bpfscope diff`): each folded
//! stack with its value before and after, 0 where a side lacks it.

use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct DiffProfile {
    /// Folded stack (root first, `;`-separated) → (before, after).
    pub stacks: BTreeMap<String, (u64, u64)>,
}

impl DiffProfile {
    /// Pairs two folded profiles (stack → value).
    pub fn new(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> Self {
        let mut stacks: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for (stack, value) in before {
            stacks.entry(stack.clone()).or_default().0 += value;
        }
        for (stack, value) in after {
            stacks.entry(stack.clone()).or_default().1 += value;
        }
        DiffProfile { stacks }
    }

    pub fn totals(&self) -> (u64, u64) {
        self.stacks
            .values()
            .fold((0, 0), |(b, a), (before, after)| (b + before, a + after))
    }

    /// Scales the before values so both sides have the same total (as
    /// difffolded.pl's -n does), rounding each to the nearest count.
    pub fn normalized(&self) -> Self {
        let (before, after) = self.totals();
        if before == 0 || before == after {
            return self.clone();
        }
        let scale = after as f64 / before as f64;
        DiffProfile {
            stacks: self
                .stacks
                .iter()
                .map(|(stack, (b, a))| (stack.clone(), ((*b as f64 * scale).round() as u64, *a)))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_stacks_and_normalizes_the_before_side() {
        let before = BTreeMap::from([("a;b".to_string(), 3), ("a;c".to_string(), 1)]);
        let after = BTreeMap::from([("a;b".to_string(), 4), ("a;d".to_string(), 4)]);
        let diff = DiffProfile::new(&before, &after);
        assert_eq!(diff.stacks["a;c"], (1, 0));
        assert_eq!(diff.stacks["a;d"], (0, 4));
        assert_eq!(diff.totals(), (4, 8));
        assert_eq!(diff.normalized().stacks["a;b"], (6, 4));
    }
}
