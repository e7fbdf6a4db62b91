//! Kubernetes label selectors (`matchLabels` + `matchExpressions`), evaluated on plain maps.

use std::collections::BTreeMap;

/// Labels of an object or a namespace.
pub type Labels = BTreeMap<String, String>;

/// Pseudo-label every object carries for pool selectors: its namespace (Cilium LB-IPAM).
pub const NAMESPACE_LABEL: &str = "io.kubernetes.service.namespace";
/// Pseudo-label every object carries for pool selectors: its name (Cilium LB-IPAM).
pub const NAME_LABEL: &str = "io.kubernetes.service.name";

/// A label selector; every term must hold. The empty selector selects everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    pub match_labels: BTreeMap<String, String>,
    pub match_expressions: Vec<Expression>,
}

/// One `matchExpressions` term.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expression {
    pub key: String,
    pub operator: Operator,
    /// Non-empty for `In` / `NotIn`, empty for `Exists` / `DoesNotExist`.
    pub values: Vec<String>,
}

/// A `matchExpressions` operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl Operator {
    /// Parses the Kubernetes spelling (`In`, `NotIn`, `Exists`, `DoesNotExist`).
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "In" => Some(Operator::In),
            "NotIn" => Some(Operator::NotIn),
            "Exists" => Some(Operator::Exists),
            "DoesNotExist" => Some(Operator::DoesNotExist),
            _ => None,
        }
    }
}

impl Selector {
    /// Whether `labels` satisfy every term.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|e| e.matches(labels))
    }
}

impl Expression {
    /// Whether `labels` satisfy this term (Kubernetes semantics: `NotIn` holds when the key
    /// is absent).
    pub fn matches(&self, labels: &Labels) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            Operator::In => value.is_some_and(|v| self.values.contains(v)),
            Operator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn expr(key: &str, operator: Operator, values: &[&str]) -> Expression {
        Expression {
            key: key.into(),
            operator,
            values: values.iter().map(|v| v.to_string()).collect(),
        }
    }

    #[test]
    fn empty_selects_everything() {
        assert!(Selector::default().matches(&Labels::new()));
    }

    #[test]
    fn match_labels_and_expressions_all_hold() {
        let selector = Selector {
            match_labels: labels(&[("tier", "edge")]),
            match_expressions: vec![
                expr("env", Operator::In, &["prod", "staging"]),
                expr("legacy", Operator::DoesNotExist, &[]),
            ],
        };
        assert!(selector.matches(&labels(&[("tier", "edge"), ("env", "prod")])));
        assert!(!selector.matches(&labels(&[("tier", "edge"), ("env", "dev")])));
        assert!(!selector.matches(&labels(&[("tier", "core"), ("env", "prod")])));
        assert!(!selector.matches(&labels(&[("tier", "edge"), ("env", "prod"), ("legacy", "")])));
    }

    #[test]
    fn not_in_holds_for_absent_keys_and_exists_needs_the_key() {
        let not_in = expr("env", Operator::NotIn, &["dev"]);
        assert!(not_in.matches(&Labels::new()));
        assert!(!not_in.matches(&labels(&[("env", "dev")])));
        let exists = expr("env", Operator::Exists, &[]);
        assert!(!exists.matches(&Labels::new()));
        assert!(exists.matches(&labels(&[("env", "")])));
    }
}
