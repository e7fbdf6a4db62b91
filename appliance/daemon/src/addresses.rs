//! LB-IPAM in the daemon: requests of the native gateways, their listeners' addresses from
//! the allocation, and the allocations kept in `<state_dir>/ipam.json` across restarts.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use gatehouse_config::Config;
use gatehouse_ipam::{Allocation, Port, Previous, Request, Transport};
use gatehouse_model::{L4Protocol, ObjectId, OwnedAddress};
use serde::{Deserialize, Serialize};

/// File name of the allocations below the state directory.
pub const STATE_FILE: &str = "ipam.json";
const STATE_VERSION: u32 = 1;

/// Requests of the native gateways: those without `addresses` ask for one; named addresses
/// inside a pool are reserved (nobody else gets them). Named addresses outside every pool are
/// the operator's own and not IPAM's business.
pub fn native_requests(config: &Config) -> Vec<Request> {
    let mut out = Vec::new();
    for gateway in &config.native_gateways {
        let mut request = Request::new(gateway.id.clone());
        request.ports = config
            .native
            .listeners
            .iter()
            .filter(|l| l.id.gateway == gateway.id)
            .map(|l| Port::tcp(l.port))
            .collect();
        if let Some(addresses) = &gateway.addresses {
            request.requested = addresses
                .iter()
                .copied()
                .filter(|ip| config.ipam_pools.pool_of(*ip).is_some())
                .collect();
            if request.requested.is_empty() {
                continue;
            }
        }
        out.push(request);
    }
    // L4 services: one without `address` asks for one; a named address inside a pool is
    // reserved, like a gateway's.
    for service in &config.native.l4_services {
        let mut request = Request::new(service.id.clone());
        request.ports = vec![Port {
            transport: match service.protocol {
                L4Protocol::Tcp => Transport::Tcp,
                L4Protocol::Udp => Transport::Udp,
            },
            port: service.port,
        }];
        if !service.addresses.is_empty() {
            request.requested = service
                .addresses
                .iter()
                .copied()
                .filter(|ip| config.ipam_pools.pool_of(*ip).is_some())
                .collect();
            if request.requested.is_empty() {
                continue;
            }
        }
        out.push(request);
    }
    out
}

/// Gives the native gateways without `addresses` what the allocation handed them. A gateway
/// that got nothing keeps its listeners without an address (the proxy binds nothing for them
/// and reports them; status says `AddressNotAssigned`); the reason becomes a warning, as does
/// a reserved address another object holds.
pub fn apply_native(config: &mut Config, allocation: &Allocation, warnings: &mut Vec<String>) {
    let mut addresses: BTreeMap<ObjectId, Vec<IpAddr>> = BTreeMap::new();
    for gateway in &config.native_gateways {
        let Some(outcome) = allocation.outcome(&gateway.id) else { continue };
        for failure in &outcome.failures {
            warnings.push(format!("{}: {failure}", gateway.id));
        }
        if gateway.addresses.is_none() {
            addresses.insert(gateway.id.clone(), outcome.ips());
        }
    }
    for listener in &mut config.native.listeners {
        if let Some(ips) = addresses.get(&listener.id.gateway) {
            listener.addresses.clone_from(ips);
        }
    }
    for service in &mut config.native.l4_services {
        let Some(outcome) = allocation.outcome(&service.id) else { continue };
        for failure in &outcome.failures {
            warnings.push(format!("{}: {failure}", service.id));
        }
        if service.addresses.is_empty() {
            service.addresses = outcome.ips();
        }
    }
}

/// Every address of the allocation with its owner, for `Desired::owned_addresses`.
pub fn owned(allocation: &Allocation) -> Vec<OwnedAddress> {
    allocation.owned().into_iter().map(|(address, owner)| OwnedAddress { address, owner }).collect()
}

/// The allocations as stored.
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    version: u32,
    allocations: Vec<StoredAllocation>,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredAllocation {
    kind: String,
    namespace: String,
    name: String,
    addresses: Vec<IpAddr>,
}

/// The allocations of the last load, and where they are kept.
#[derive(Debug)]
pub struct IpamState {
    path: PathBuf,
    previous: Previous,
}

impl IpamState {
    /// Reads `<state_dir>/ipam.json`; a missing file is an empty history, an unreadable one
    /// is logged and ignored (addresses are then chosen afresh).
    pub fn open(state_dir: &Path) -> Self {
        let path = state_dir.join(STATE_FILE);
        let previous = match std::fs::read(&path) {
            Ok(bytes) => match parse(&bytes) {
                Ok(previous) => previous,
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "ignoring the IPAM state file");
                    Previous::new()
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Previous::new(),
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "cannot read the IPAM state file");
                Previous::new()
            }
        };
        Self { path, previous }
    }

    /// What objects held before, for the next allocation.
    pub fn previous(&self) -> &Previous {
        &self.previous
    }

    /// Remembers `allocation` and writes it when it changed (atomically: a temporary file in
    /// the same directory, fsync, rename, fsync of the directory).
    pub fn store(&mut self, allocation: &Allocation) {
        let now = allocation.to_previous();
        if now == self.previous && self.path.exists() {
            return;
        }
        if let Err(error) = write_atomically(&self.path, &render(&now)) {
            tracing::warn!(path = %self.path.display(), %error, "cannot write the IPAM state file");
        }
        self.previous = now;
    }
}

fn parse(bytes: &[u8]) -> Result<Previous, String> {
    let file: StateFile = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if file.version != STATE_VERSION {
        return Err(format!("unknown version {}", file.version));
    }
    Ok(file
        .allocations
        .into_iter()
        .map(|a| (ObjectId::new(a.kind, a.namespace, a.name), a.addresses))
        .collect())
}

fn render(previous: &Previous) -> Vec<u8> {
    let file = StateFile {
        version: STATE_VERSION,
        allocations: previous
            .iter()
            .map(|(id, addresses)| StoredAllocation {
                kind: id.kind.clone(),
                namespace: id.namespace.clone(),
                name: id.name.clone(),
                addresses: addresses.clone(),
            })
            .collect(),
    };
    let mut bytes = serde_json::to_vec_pretty(&file).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

    use gatehouse_ipam::{Block, Pool, Pools, allocate};

    use super::*;

    #[test]
    fn state_survives_a_round_trip_and_is_rewritten_only_on_change() {
        let dir = tempfile::tempdir().unwrap();
        let pools =
            Pools::new(vec![Pool::new("p", vec![Block::cidr("10.0.0.0/29").unwrap()])]).unwrap();
        let requests = [Request::new(ObjectId::new("Gateway", "toml", "a"))];
        let mut state = IpamState::open(dir.path());
        assert!(state.previous().is_empty());
        let allocation = allocate(&pools, &requests, state.previous());
        state.store(&allocation);
        let path = dir.path().join(STATE_FILE);
        let written = std::fs::metadata(&path).unwrap().modified().unwrap();
        state.store(&allocation);
        assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), written);
        let reopened = IpamState::open(dir.path());
        assert_eq!(reopened.previous(), &allocation.to_previous());
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_broken_state_file_is_an_empty_history() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(STATE_FILE), "{not json").unwrap();
        assert!(IpamState::open(dir.path()).previous().is_empty());
        std::fs::write(dir.path().join(STATE_FILE), r#"{"version": 9, "allocations": []}"#)
            .unwrap();
        assert!(IpamState::open(dir.path()).previous().is_empty());
    }
}
