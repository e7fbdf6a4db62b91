//! Condition types and reasons of the Gateway API status schema, as constants.

// Condition types.
pub const ACCEPTED: &str = "Accepted";
pub const PROGRAMMED: &str = "Programmed";
pub const RESOLVED_REFS: &str = "ResolvedRefs";
pub const CONFLICTED: &str = "Conflicted";
pub const PARTIALLY_INVALID: &str = "PartiallyInvalid";

/// Reasons, shared where GatewayClass, Gateway, Listener and Route use the same string.
pub mod reason {
    // Positive reasons (same string as the condition type).
    pub const ACCEPTED: &str = "Accepted";
    pub const PROGRAMMED: &str = "Programmed";
    pub const RESOLVED_REFS: &str = "ResolvedRefs";
    pub const NO_CONFLICTS: &str = "NoConflicts";

    // GatewayClass.
    pub const INVALID_PARAMETERS: &str = "InvalidParameters";

    // Gateway.
    pub const INVALID: &str = "Invalid";
    pub const PENDING: &str = "Pending";
    pub const LISTENERS_NOT_VALID: &str = "ListenersNotValid";
    pub const UNSUPPORTED_ADDRESS: &str = "UnsupportedAddress";
    pub const ADDRESS_NOT_ASSIGNED: &str = "AddressNotAssigned";
    pub const ADDRESS_NOT_USABLE: &str = "AddressNotUsable";

    // ListenerSet.
    pub const NOT_ALLOWED: &str = "NotAllowed";
    pub const PARENT_NOT_ACCEPTED: &str = "ParentNotAccepted";
    pub const PARENT_NOT_PROGRAMMED: &str = "ParentNotProgrammed";

    // Listener.
    pub const PORT_UNAVAILABLE: &str = "PortUnavailable";
    pub const UNSUPPORTED_PROTOCOL: &str = "UnsupportedProtocol";
    pub const UNSUPPORTED_VALUE: &str = "UnsupportedValue";
    pub const HOSTNAME_CONFLICT: &str = "HostnameConflict";
    pub const PROTOCOL_CONFLICT: &str = "ProtocolConflict";
    pub const INVALID_CERTIFICATE_REF: &str = "InvalidCertificateRef";
    pub const INVALID_ROUTE_KINDS: &str = "InvalidRouteKinds";
    pub const REF_NOT_PERMITTED: &str = "RefNotPermitted";
    pub const INVALID_CLIENT_CERTIFICATE_REF: &str = "InvalidClientCertificateRef";

    // Route.
    pub const NOT_ALLOWED_BY_LISTENERS: &str = "NotAllowedByListeners";
    pub const NO_MATCHING_LISTENER_HOSTNAME: &str = "NoMatchingListenerHostname";
    pub const NO_MATCHING_PARENT: &str = "NoMatchingParent";
    pub const INCOMPATIBLE_FILTERS: &str = "IncompatibleFilters";
    pub const INVALID_KIND: &str = "InvalidKind";
    pub const BACKEND_NOT_FOUND: &str = "BackendNotFound";

    // Policies (BackendTLSPolicy).
    pub const CONFLICTED: &str = "Conflicted";
    pub const TARGET_NOT_FOUND: &str = "TargetNotFound";
    pub const NO_VALID_CA_CERTIFICATE: &str = "NoValidCACertificate";
    pub const INVALID_CA_CERTIFICATE_REF: &str = "InvalidCACertificateRef";
}
