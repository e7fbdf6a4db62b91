//! `[l4]`: bounds of the user-space L4 proxy (TCP, UDP and TLS listeners). Hot-reloads.

use std::time::Duration;

use gatehouse_model::L4Limits;
use toml::Spanned;

use crate::error::{Errors, Problem};

pub(crate) mod schema {
    use serde::Deserialize;
    use toml::Spanned;

    /// `[l4]` as written.
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(crate) struct L4 {
        pub tcp_idle_timeout_ms: Option<Spanned<u64>>,
        pub udp_idle_timeout_ms: Option<Spanned<u64>>,
        pub udp_max_sessions: Option<Spanned<u64>>,
        pub client_hello_timeout_ms: Option<Spanned<u64>>,
        pub connect_timeout_ms: Option<Spanned<u64>>,
    }
}

/// The limits, defaults where absent; a value out of range is an error at its place.
pub(crate) fn limits(l4: Option<schema::L4>, errors: &mut Errors<'_>) -> L4Limits {
    let mut out = L4Limits::default();
    let Some(l4) = l4 else { return out };
    let mut ms = |value: Option<Spanned<u64>>, name: &str, max: u64, into: &mut Duration| {
        if let Some(v) = value {
            if (1..=max).contains(v.get_ref()) {
                *into = Duration::from_millis(*v.get_ref());
            } else {
                errors.push(&v.span(), Problem::L4(format!("{name} must be between 1 and {max}")));
            }
        }
    };
    const DAY_MS: u64 = 86_400_000;
    ms(l4.tcp_idle_timeout_ms, "tcp_idle_timeout_ms", DAY_MS, &mut out.tcp_idle_timeout);
    ms(l4.udp_idle_timeout_ms, "udp_idle_timeout_ms", DAY_MS, &mut out.udp_idle_timeout);
    ms(
        l4.client_hello_timeout_ms,
        "client_hello_timeout_ms",
        60_000,
        &mut out.client_hello_timeout,
    );
    ms(l4.connect_timeout_ms, "connect_timeout_ms", 60_000, &mut out.connect_timeout);
    if let Some(v) = l4.udp_max_sessions {
        match usize::try_from(*v.get_ref()) {
            Ok(n @ 1..=1_000_000) => out.udp_max_sessions = n,
            _ => errors.push(
                &v.span(),
                Problem::L4("udp_max_sessions must be between 1 and 1000000".to_owned()),
            ),
        }
    }
    out
}
