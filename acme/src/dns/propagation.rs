//! Is a challenge record visible where the CA will look? Asked of the zone's authoritative
//! servers (from its NS records) or of the configured resolvers, at an interval, until a
//! timeout: never a fixed sleep. `_acme-challenge` names delegated by CNAME are followed.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use gatehouse_model::acme::Propagation;
use hickory_proto::rr::{Name, RData, RecordType};

use super::lookup::{self, answered, txt_values};
use super::{DnsError, TxtRecord};
use crate::error::AcmeError;

/// Longest CNAME chain followed.
const MAX_CNAME_HOPS: usize = 8;

/// The propagation check of one issuer.
#[derive(Clone, Debug)]
pub struct PropagationCheck {
    spec: Propagation,
    /// Recursive resolvers for CNAME, SOA, NS and address lookups.
    recursive: Vec<SocketAddr>,
}

impl PropagationCheck {
    /// A check with the configured resolvers, else the system's (`/etc/resolv.conf`).
    pub fn new(spec: &Propagation) -> Self {
        let recursive =
            if spec.resolvers.is_empty() { system_resolvers() } else { spec.resolvers.clone() };
        Self { spec: spec.clone(), recursive }
    }

    /// Where the record for `fqdn` really lives: the end of its CNAME chain.
    pub async fn target(&self, fqdn: &str) -> Result<String, DnsError> {
        let mut name = lookup::name(fqdn)?;
        for _ in 0..MAX_CNAME_HOPS {
            let Some(answer) = self.ask_any(&name, RecordType::CNAME).await? else {
                break;
            };
            let next = answer.answers.iter().find_map(|r| match &r.data {
                RData::CNAME(c) if r.name == name => Some(c.0.clone()),
                _ => None,
            });
            match next {
                Some(next) => name = next,
                None => break,
            }
        }
        Ok(name.to_string())
    }

    /// Waits until every record is visible on every server that must have it.
    pub async fn wait(&self, records: &[TxtRecord]) -> Result<(), AcmeError> {
        let started = Instant::now();
        let mut checks = Vec::new();
        for record in records {
            let name = lookup::name(&record.fqdn)?;
            let servers = self.servers_for(&name).await?;
            checks.push((name, record.value.clone(), servers));
        }
        loop {
            let mut missing = None;
            'all: for (name, value, servers) in &checks {
                for server in servers {
                    let seen = match lookup::query(*server, name, RecordType::TXT, false).await {
                        Ok(answer) => txt_values(&answer, name).iter().any(|v| v == value),
                        Err(_) => false,
                    };
                    if !seen {
                        missing = Some((name.to_string(), server.to_string()));
                        break 'all;
                    }
                }
            }
            let Some((name, server)) = missing else {
                return Ok(());
            };
            let waited = started.elapsed();
            if waited >= self.spec.timeout {
                return Err(AcmeError::Propagation { name, server, waited });
            }
            let left = self.spec.timeout - waited;
            tokio::time::sleep(self.spec.interval.min(left)).await;
        }
    }

    /// The servers asked for `name`: the configured resolvers, else the authoritative servers
    /// of the zone holding it.
    async fn servers_for(&self, name: &Name) -> Result<Vec<SocketAddr>, DnsError> {
        if !self.spec.resolvers.is_empty() {
            return Ok(self.spec.resolvers.clone());
        }
        let zone = self.zone_of(name).await?;
        let Some(answer) = self.ask_any(&zone, RecordType::NS).await? else {
            return Err(DnsError::NoZone(name.to_string()));
        };
        let ns_names: BTreeSet<Name> = answer
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::NS(ns) => Some(ns.0.clone()),
                _ => None,
            })
            .collect();
        let mut servers = Vec::new();
        for ns in ns_names {
            for rtype in [RecordType::A, RecordType::AAAA] {
                if let Some(answer) = self.ask_any(&ns, rtype).await? {
                    servers.extend(answer.answers.iter().filter_map(|r| match &r.data {
                        RData::A(a) => Some(SocketAddr::new(IpAddr::V4(a.0), 53)),
                        RData::AAAA(a) => Some(SocketAddr::new(IpAddr::V6(a.0), 53)),
                        _ => None,
                    }));
                }
            }
        }
        if servers.is_empty() {
            return Err(DnsError::NoZone(format!(
                "{name} (no address for the zone's name servers)"
            )));
        }
        Ok(servers)
    }

    /// The closest enclosing zone: the owner of the SOA in the answer or authority section.
    async fn zone_of(&self, name: &Name) -> Result<Name, DnsError> {
        let mut candidate = name.clone();
        loop {
            if let Some(answer) = self.ask_any(&candidate, RecordType::SOA).await?
                && let Some(soa) = answer
                    .answers
                    .iter()
                    .chain(answer.authorities.iter())
                    .find(|r| r.record_type() == RecordType::SOA)
            {
                return Ok(soa.name.clone());
            }
            if candidate.num_labels() <= 1 {
                return Err(DnsError::NoZone(name.to_string()));
            }
            candidate = candidate.base_name();
        }
    }

    /// Asks the recursive resolvers in turn; `None` when none gave an answer.
    async fn ask_any(
        &self,
        name: &Name,
        rtype: RecordType,
    ) -> Result<Option<hickory_proto::op::Message>, DnsError> {
        let mut last = None;
        for server in &self.recursive {
            match lookup::query(*server, name, rtype, true).await {
                Ok(answer) if answered(&answer) => return Ok(Some(answer)),
                Ok(_) => {}
                Err(e) => last = Some(e),
            }
        }
        match last {
            Some(e) if self.recursive.len() == 1 => Err(e),
            _ => Ok(None),
        }
    }
}

/// `nameserver` lines of `/etc/resolv.conf`, port 53.
fn system_resolvers() -> Vec<SocketAddr> {
    parse_resolv_conf(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default())
}

fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.trim().split('%').next()?.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_nameservers_are_read() {
        let text = "# c\nsearch x\nnameserver 10.0.0.1\nnameserver fe80::1%eth0\noptions ndots:2\n";
        assert_eq!(
            parse_resolv_conf(text),
            vec!["10.0.0.1:53".parse().expect("v4"), "[fe80::1]:53".parse().expect("v6"),]
        );
    }
}
