//! `[[ipam.pools]]`: address pools for LB-IPAM, checked with every error at its place.

use std::collections::BTreeMap;

use gatehouse_ipam::{Block, Expression, Operator, Pool, Pools, Selector};

use crate::error::{Errors, Position, Problem};
use crate::native::{is_dns_label, is_dns_subdomain, parse_ip};
use crate::schema;

/// Converts the pools; overlaps are reported at the later block, naming the earlier one.
pub(crate) fn convert(ipam: Option<schema::Ipam>, errors: &mut Errors<'_>) -> Pools {
    let Some(ipam) = ipam else { return Pools::default() };
    let mut pools: Vec<Pool> = Vec::new();
    // Every accepted block with its pool's name and its place, for overlap reports.
    let mut seen: Vec<(Block, String, Position)> = Vec::new();
    let mut names: BTreeMap<String, Position> = BTreeMap::new();
    for pool in ipam.pools {
        let name = pool.name.get_ref().clone();
        let position = errors.position(&pool.name.span());
        if !is_dns_subdomain(&name) {
            errors
                .push(&pool.name.span(), Problem::InvalidName { what: "pool", name: name.clone() });
        }
        if let Some(&first) = names.get(&name) {
            let problem = Problem::DuplicateName { what: "pool", name: name.clone(), first };
            errors.push(&pool.name.span(), problem);
        }
        names.entry(name.clone()).or_insert(position);
        if pool.cidrs.is_empty() && pool.ranges.is_empty() {
            errors.push(&pool.name.span(), Problem::PoolWithoutAddresses);
        }
        let mut blocks = Vec::new();
        for cidr in &pool.cidrs {
            if let Ok(block) = Block::cidr(cidr.get_ref()).map_err(|e| errors.push(&cidr.span(), e))
            {
                blocks.push((block, cidr.span()));
            }
        }
        for range in &pool.ranges {
            let span = range.span();
            let (start, end) = (&range.get_ref().start, &range.get_ref().end);
            let start = parse_ip(start.get_ref()).map_err(|p| errors.push(&start.span(), p));
            let end = parse_ip(end.get_ref()).map_err(|p| errors.push(&end.span(), p));
            if let (Ok(start), Ok(end)) = (start, end) {
                match Block::range(start, end) {
                    Ok(block) => blocks.push((block, span)),
                    Err(e) => errors.push(&span, e),
                }
            }
        }
        for (block, span) in &blocks {
            if let Some((other, pool_name, first)) = seen.iter().find(|(b, ..)| b.overlaps(block)) {
                let problem = Problem::PoolOverlap {
                    block: block.to_string(),
                    other: other.to_string(),
                    pool: pool_name.clone(),
                    first: *first,
                };
                errors.push(span, problem);
            } else {
                seen.push((*block, name.clone(), errors.position(span)));
            }
        }
        let mut namespaces = Vec::new();
        for namespace in &pool.namespaces {
            if !is_dns_label(namespace.get_ref()) {
                errors.push(
                    &namespace.span(),
                    Problem::InvalidNamespace(namespace.get_ref().clone()),
                );
            }
            namespaces.push(namespace.get_ref().clone());
        }
        pools.push(Pool {
            name,
            blocks: blocks.into_iter().map(|(b, _)| b).collect(),
            auto_assign: pool.auto_assign.unwrap_or(true),
            selector: pool.selector.map(|s| selector(s, errors)),
            namespaces,
            namespace_selector: pool.namespace_selector.map(|s| selector(s, errors)),
        });
    }
    // Every problem `Pools::new` finds was reported above with its place; on a clean file it
    // accepts the same pools.
    Pools::new(pools).unwrap_or_default()
}

fn selector(selector: schema::Selector, errors: &mut Errors<'_>) -> Selector {
    let match_expressions = selector
        .match_expressions
        .into_iter()
        .map(|e| {
            let span = e.span();
            let e = e.into_inner();
            let operator = Operator::parse(e.operator.get_ref()).unwrap_or_else(|| {
                errors.push(
                    &e.operator.span(),
                    Problem::InvalidOperator(e.operator.get_ref().clone()),
                );
                Operator::Exists
            });
            let needs_values = matches!(operator, Operator::In | Operator::NotIn);
            if needs_values == e.values.is_empty() {
                errors.push(&span, Problem::SelectorValues { operator: e.operator.into_inner() });
            }
            Expression { key: e.key, operator, values: e.values }
        })
        .collect();
    Selector { match_labels: selector.match_labels, match_expressions }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

    use std::net::IpAddr;
    use std::path::Path;

    use gatehouse_ipam::{Family, Operator};

    use crate::parse;

    fn errors(text: &str) -> Vec<String> {
        let errors = parse(text, Path::new("t.toml"), Path::new("/base")).expect_err("should fail");
        errors.errors().iter().map(|e| e.to_string().replacen("t.toml:", "", 1)).collect()
    }

    #[test]
    fn pools_are_read_with_their_blocks_and_selectors() {
        let text = r#"
[[ipam.pools]]
name = "public"
cidrs = ["192.0.2.0/29", "2001:db8::/126"]
ranges = [{ start = "198.51.100.10", end = "198.51.100.20" }]
namespaces = ["edge"]

[ipam.pools.selector]
match_labels = { color = "red" }
match_expressions = [{ key = "env", operator = "NotIn", values = ["dev"] }]

[ipam.pools.namespace_selector]
match_expressions = [{ key = "tier", operator = "Exists" }]

[[ipam.pools]]
name = "manual"
cidrs = ["203.0.113.0/30"]
auto_assign = false
"#;
        let config = parse(text, Path::new("t.toml"), Path::new("/base")).unwrap();
        let pools: Vec<_> = config.ipam_pools.iter().collect();
        assert_eq!(pools.len(), 2);
        let public = pools[0];
        assert_eq!(public.name, "public");
        assert!(public.auto_assign);
        assert_eq!(public.blocks.len(), 3);
        assert!(public.contains("192.0.2.6".parse::<IpAddr>().unwrap()));
        assert!(public.contains("198.51.100.20".parse::<IpAddr>().unwrap()));
        assert!(public.has_family(Family::V6));
        assert_eq!(public.namespaces, ["edge"]);
        let selector = public.selector.as_ref().unwrap();
        assert_eq!(selector.match_labels["color"], "red");
        assert_eq!(selector.match_expressions[0].operator, Operator::NotIn);
        let ns_selector = public.namespace_selector.as_ref().unwrap();
        assert_eq!(ns_selector.match_expressions[0].operator, Operator::Exists);
        assert!(!pools[1].auto_assign);
    }

    #[test]
    fn no_ipam_section_means_no_pools() {
        let config = parse("", Path::new("t.toml"), Path::new("/base")).unwrap();
        assert!(config.ipam_pools.is_empty());
    }

    #[test]
    fn every_pool_error_has_its_place() {
        let text = r#"
[[ipam.pools]]
name = "a"
cidrs = ["10.0.0.0/24", "10.0.1.1/24", "nonsense"]
ranges = [{ start = "10.0.9.9", end = "10.0.9.1" }, { start = "10.0.8.1", end = "fd00::1" }]

[[ipam.pools]]
name = "a"
cidrs = ["10.0.0.128/25"]
ranges = [{ start = "x", end = "10.0.7.1" }]

[[ipam.pools]]
name = "Bad_Name"

[[ipam.pools]]
name = "sel"
cidrs = ["10.9.0.0/24"]
namespaces = ["Not A Namespace"]
[ipam.pools.selector]
match_expressions = [
  { key = "a", operator = "Maybe" },
  { key = "b", operator = "In" },
  { key = "c", operator = "Exists", values = ["x"] },
]
"#;
        assert_eq!(
            errors(text),
            [
                "4:25: \"10.0.1.1/24\" has host bits set; the network is 10.0.1.0/24",
                "4:40: \"nonsense\" is not a CIDR (ADDRESS/PREFIX-LENGTH)",
                "5:11: range end 10.0.9.1 is before its start 10.0.9.9",
                "5:53: range start 10.0.8.1 and end fd00::1 are of different IP families",
                "8:8: duplicate pool name \"a\" (first defined at 3:8)",
                "9:10: addresses 10.0.0.129-10.0.0.254 overlap 10.0.0.1-10.0.0.254 of pool \"a\" (at 4:10)",
                "10:21: \"x\" is not an IP address: invalid IP address syntax",
                "13:8: invalid pool name \"Bad_Name\": use lower-case letters, digits, '-' and '.', starting and ending with a letter or digit, at most 253 characters",
                "13:8: a pool needs at least one entry in `cidrs` or `ranges`",
                "18:15: invalid namespace \"Not A Namespace\": use lower-case letters, digits and '-', starting and ending with a letter or digit, at most 63 characters",
                "21:27: operator \"Maybe\" is not one of In, NotIn, Exists, DoesNotExist",
                "22:3: operator In needs `values` exactly when it is In or NotIn",
                "23:3: operator Exists needs `values` exactly when it is In or NotIn",
            ]
        );
    }

    #[test]
    fn unknown_pool_keys_are_rejected() {
        let text = "[[ipam.pools]]\nname = \"a\"\ncidrs = [\"10.0.0.0/24\"]\nautoassign = false\n";
        assert!(
            errors(text)[0].starts_with("4:1: unknown field `autoassign`"),
            "{:?}",
            errors(text)
        );
    }
}
