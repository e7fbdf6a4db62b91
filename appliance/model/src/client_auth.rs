//! Client certificate validation on HTTPS listeners (Gateway API `spec.tls.frontend`).

use serde::Serialize;

use crate::{CaBundle, ListenerId};

/// Client certificates an HTTPS listener asks for and validates.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ClientValidation {
    pub listener: ListenerId,
    /// The CAs a client's chain must end in.
    pub roots: Vec<CaBundle>,
    pub mode: ClientValidationMode,
}

/// What happens to a client without a valid certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ClientValidationMode {
    /// The handshake fails (`AllowValidOnly`).
    RequireValid,
    /// The client is served anyway (`AllowInsecureFallback`): a certificate is asked for,
    /// and one that does not validate is ignored rather than refused.
    AllowInsecureFallback,
}
