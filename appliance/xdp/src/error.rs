//! Errors of the loader, the attach and the map applier.

/// Why the XDP data plane could not load, attach or apply.
#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    #[error("loading the XDP object failed: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("the XDP object has no program `{0}`")]
    MissingProgram(&'static str),
    #[error("the XDP object has no map `{0}`")]
    MissingMap(&'static str),
    #[error("XDP program `{name}`: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("map `{name}`: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("interface `{0}` does not exist")]
    UnknownInterface(String),
    #[error(
        "interface `{0}` already has an XDP program attached (another gatehouse, or another \
         XDP user); detach it first (`ip link set dev {0} xdp off`)"
    )]
    Busy(String),
    #[error(
        "interface `{0}` has no XDP driver mode (mode = \"driver\"); use \"auto\" or \"generic\""
    )]
    DriverModeUnavailable(String),
    #[error("attaching XDP to `{interface}` failed: {source}")]
    Attach {
        interface: String,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("reading interface `{interface}`: {source}")]
    Interface {
        interface: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Maglev(#[from] crate::maglev::MaglevError),
    #[error("more than {0} VIPs")]
    TooManyVips(u32),
    #[error("more than {0} backends")]
    TooManyBackends(u32),
    #[error("VIP {vip}: backend {backend} is of the other IP family")]
    FamilyMismatch { vip: String, backend: String },
    #[error("VIP {vip}: no {family} source address configured for forwarding")]
    NoSource { vip: String, family: &'static str },
    #[error("VIP {0} is in the plan twice")]
    DuplicateVip(String),
    #[error(
        "{error}; undoing the plan's map writes failed too ({undo}): the maps may mix two \
         generations until a plan is written in full (the next is)"
    )]
    NotUndone { error: Box<XdpError>, undo: Box<XdpError> },
    #[error("drop-list prefix {addr}/{len} is longer than the address")]
    BadPrefix { addr: std::net::IpAddr, len: u8 },
}

pub(crate) fn map_err(name: &'static str) -> impl FnOnce(aya::maps::MapError) -> XdpError {
    move |source| XdpError::Map { name, source }
}
