//! Pools: named sets of blocks, who may draw from them, and the validated set of all pools.

use std::net::IpAddr;

use crate::block::{Block, Family};
use crate::request::Request;
use crate::selector::{Labels, NAME_LABEL, NAMESPACE_LABEL, Selector};

/// One pool of addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pool {
    /// Unique among the pools; names the pool in results and status messages.
    pub name: String,
    pub blocks: Vec<Block>,
    /// `false`: addresses are only handed out when an object asks for one of them.
    pub auto_assign: bool,
    /// On the object's labels plus the `io.kubernetes.service.namespace` / `.name`
    /// pseudo-labels (Cilium's `serviceSelector`); `None` selects every object.
    pub selector: Option<Selector>,
    /// Namespaces whose objects may draw from the pool (MetalLB's `serviceAllocation.namespaces`);
    /// empty means any.
    pub namespaces: Vec<String>,
    /// On the labels of the object's namespace (MetalLB's `namespaceSelectors`); `None` means any.
    pub namespace_selector: Option<Selector>,
}

impl Pool {
    /// A pool of `blocks` that serves every object and assigns automatically.
    pub fn new(name: impl Into<String>, blocks: Vec<Block>) -> Self {
        Self {
            name: name.into(),
            blocks,
            auto_assign: true,
            selector: None,
            namespaces: Vec::new(),
            namespace_selector: None,
        }
    }

    /// Whether the pool holds `ip`.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.blocks.iter().any(|b| b.contains(ip))
    }

    /// Whether the pool has addresses of `family`.
    pub fn has_family(&self, family: Family) -> bool {
        self.blocks.iter().any(|b| b.family() == family)
    }

    /// Whether the object of `request` may draw from this pool.
    pub fn selects(&self, request: &Request) -> bool {
        let namespace = &request.owner.namespace;
        if !self.namespaces.is_empty() && !self.namespaces.contains(namespace) {
            return false;
        }
        if let Some(selector) = &self.namespace_selector
            && !selector.matches(&request.namespace_labels)
        {
            return false;
        }
        match &self.selector {
            None => true,
            Some(selector) => {
                let mut labels: Labels = request.labels.clone();
                labels.insert(NAMESPACE_LABEL.to_owned(), namespace.clone());
                labels.insert(NAME_LABEL.to_owned(), request.owner.name.clone());
                selector.matches(&labels)
            }
        }
    }
}

/// Why a set of pools is not usable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("pool name must not be empty")]
    EmptyName,
    #[error("two pools are named {0:?}")]
    DuplicateName(String),
    #[error("pool {0:?} has no blocks")]
    NoBlocks(String),
    #[error("pool {pool:?} block {block} overlaps pool {other:?} block {other_block}")]
    Overlap { pool: String, block: String, other: String, other_block: String },
}

/// Pools that were checked: unique names, no address in two blocks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pools(Vec<Pool>);

impl Pools {
    /// Checks the pools; their order is the order auto-assignment tries them in.
    pub fn new(pools: Vec<Pool>) -> Result<Self, PoolError> {
        for (i, pool) in pools.iter().enumerate() {
            if pool.name.is_empty() {
                return Err(PoolError::EmptyName);
            }
            if pool.blocks.is_empty() {
                return Err(PoolError::NoBlocks(pool.name.clone()));
            }
            for (j, block) in pool.blocks.iter().enumerate() {
                if let Some((other, other_block)) = first_overlap(&pools[..=i], i, j, block) {
                    return Err(PoolError::Overlap {
                        pool: pool.name.clone(),
                        block: block.to_string(),
                        other: other.name.clone(),
                        other_block: other_block.to_string(),
                    });
                }
            }
            if pools[..i].iter().any(|p| p.name == pool.name) {
                return Err(PoolError::DuplicateName(pool.name.clone()));
            }
        }
        Ok(Self(pools))
    }

    /// The pools, in assignment order.
    pub fn iter(&self) -> impl Iterator<Item = &Pool> {
        self.0.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The pool holding `ip`, if any.
    pub fn pool_of(&self, ip: IpAddr) -> Option<&Pool> {
        self.0.iter().find(|p| p.contains(ip))
    }
}

/// The first block before block `j` of pool `i` (in pool order) that overlaps `block`.
pub(crate) fn first_overlap<'p>(
    pools: &'p [Pool],
    i: usize,
    j: usize,
    block: &Block,
) -> Option<(&'p Pool, Block)> {
    pools.iter().enumerate().find_map(|(pi, p)| {
        let upto = if pi == i { j } else { p.blocks.len() };
        p.blocks[..upto].iter().find(|b| b.overlaps(block)).map(|b| (p, *b))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Block {
        Block::cidr(s).unwrap()
    }

    #[test]
    fn rejects_overlaps_duplicates_and_empty_pools() {
        let a = Pool::new("a", vec![cidr("10.0.0.0/24")]);
        let b = Pool::new("b", vec![cidr("10.0.1.0/24"), cidr("10.0.0.128/25")]);
        assert!(matches!(
            Pools::new(vec![a.clone(), b]),
            Err(PoolError::Overlap { pool, other, .. }) if pool == "b" && other == "a"
        ));
        let inner = Pool::new("c", vec![cidr("10.1.0.0/24"), cidr("10.1.0.0/25")]);
        assert!(matches!(Pools::new(vec![inner]), Err(PoolError::Overlap { .. })));
        let again = Pool::new("a", vec![cidr("10.9.0.0/24")]);
        assert_eq!(Pools::new(vec![a.clone(), again]), Err(PoolError::DuplicateName("a".into())));
        assert_eq!(Pools::new(vec![Pool::new("e", vec![])]), Err(PoolError::NoBlocks("e".into())));
        let v6 = Pool::new("v6", vec![cidr("fd00::/64")]);
        assert!(Pools::new(vec![a, v6]).is_ok());
    }
}
