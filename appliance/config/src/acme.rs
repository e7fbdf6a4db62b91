//! `[acme]`: ACME issuers (`[[acme.issuers]]`), and the listeners (`tls.acme`) they certify.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use gatehouse_model::acme::{
    AcmeIssuer, Cloudflare, DnsProvider, ExecHook, ExternalAccountBinding,
    ListenerCertificateRequest, Propagation, Rfc2136, Route53, Secret, TsigAlgorithm,
};

use crate::error::{Errors, Problem};

/// Cloudflare's API when `api_url` is absent.
pub const DEFAULT_CLOUDFLARE_API: &str = "https://api.cloudflare.com/client/v4";
/// Route53's API when `api_url` is absent.
pub const DEFAULT_ROUTE53_API: &str = "https://route53.amazonaws.com";
/// Route53's signing region when `region` is absent.
pub const DEFAULT_ROUTE53_REGION: &str = "us-east-1";
/// How long an `exec` hook may run when `timeout_seconds` is absent.
pub const DEFAULT_EXEC_TIMEOUT: Duration = Duration::from_secs(60);

/// The ACME part of the config.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AcmeSettings {
    pub issuers: Vec<AcmeIssuer>,
    /// Listeners of the native form with `tls.acme`.
    pub requests: Vec<ListenerCertificateRequest>,
}

pub(crate) mod schema {
    use serde::Deserialize;
    use toml::Spanned;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(crate) struct Acme {
        #[serde(default)]
        pub issuers: Vec<Issuer>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(crate) struct Issuer {
        pub name: Spanned<String>,
        pub directory_url: Spanned<String>,
        #[serde(default)]
        pub contact: Vec<Spanned<String>>,
        pub eab: Option<Eab>,
        pub dns: Spanned<Dns>,
        pub propagation: Option<Propagation>,
        pub ca_roots: Option<Spanned<String>>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(crate) struct Eab {
        pub key_id: Spanned<String>,
        pub hmac_key: Spanned<String>,
    }

    /// Plain fields: inside an internally tagged enum TOML spans are lost, so errors point
    /// at the `dns` table.
    #[derive(Debug, Deserialize)]
    #[serde(tag = "provider", rename_all = "lowercase")]
    pub(crate) enum Dns {
        Rfc2136(Rfc2136),
        Exec(Exec),
        Cloudflare(Cloudflare),
        Route53(Route53),
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(crate) struct Rfc2136 {
        pub server: String,
        pub zone: Option<String>,
        pub key_name: String,
        pub algorithm: Option<String>,
        pub secret: Option<String>,
        pub secret_file: Option<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(crate) struct Exec {
        pub command: String,
        #[serde(default)]
        pub args: Vec<String>,
        pub timeout_seconds: Option<u64>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(crate) struct Cloudflare {
        pub api_token: Option<String>,
        pub api_token_file: Option<String>,
        pub zone_id: Option<String>,
        pub api_url: Option<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(crate) struct Route53 {
        pub hosted_zone_id: Option<String>,
        pub profile: Option<String>,
        pub credentials_file: Option<String>,
        pub region: Option<String>,
        pub api_url: Option<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(crate) struct Propagation {
        pub timeout_seconds: Option<Spanned<u64>>,
        pub interval_ms: Option<Spanned<u64>>,
        #[serde(default)]
        pub resolvers: Vec<Spanned<String>>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(crate) struct ListenerAcme {
        pub issuer: Spanned<String>,
        pub renew_before_seconds: Option<u64>,
    }
}

/// Converts `[acme]`; relative paths are resolved against `base_dir`.
pub(crate) fn issuers(
    acme: Option<schema::Acme>,
    base_dir: &Path,
    errors: &mut Errors<'_>,
) -> Vec<AcmeIssuer> {
    let mut out = Vec::new();
    let mut seen: HashMap<String, ()> = HashMap::new();
    for issuer in acme.map(|a| a.issuers).unwrap_or_default() {
        let name = issuer.name.get_ref().clone();
        if !crate::native::is_dns_label(&name) {
            errors.push(
                &issuer.name.span(),
                Problem::InvalidName { what: "issuer", name: name.clone() },
            );
        }
        if seen.insert(name.clone(), ()).is_some() {
            errors.push(
                &issuer.name.span(),
                Problem::Acme(format!("duplicate issuer name {name:?}")),
            );
        }
        let url = issuer.directory_url.get_ref();
        let host = url.strip_prefix("https://").unwrap_or_default();
        if host.is_empty() || host.starts_with('/') || url.chars().any(char::is_whitespace) {
            errors.push(
                &issuer.directory_url.span(),
                Problem::Acme(format!("directory_url {url:?} must be an https:// URL")),
            );
        }
        let contact = issuer
            .contact
            .iter()
            .filter_map(|c| {
                if c.get_ref().starts_with("mailto:") {
                    Some(c.get_ref().clone())
                } else {
                    errors.push(
                        &c.span(),
                        Problem::Acme(format!("contact {:?} must start with mailto:", c.get_ref())),
                    );
                    None
                }
            })
            .collect();
        let eab = issuer.eab.map(|eab| {
            if eab.hmac_key.get_ref().is_empty() {
                errors.push(&eab.hmac_key.span(), Problem::Empty { what: "eab.hmac_key" });
            }
            ExternalAccountBinding {
                key_id: eab.key_id.into_inner(),
                hmac_key: Secret::new(eab.hmac_key.into_inner()),
            }
        });
        let dns_span = issuer.dns.span();
        let dns = match dns(issuer.dns.into_inner(), base_dir) {
            Ok(dns) => Some(dns),
            Err(message) => {
                errors.push(&dns_span, Problem::Acme(format!("dns: {message}")));
                None
            }
        };
        let propagation = propagation(issuer.propagation, errors);
        let ca_roots = issuer.ca_roots.map(|p| base_dir.join(p.into_inner()));
        if let Some(dns) = dns {
            out.push(AcmeIssuer {
                name,
                directory_url: issuer.directory_url.into_inner(),
                contact,
                eab,
                dns,
                propagation,
                ca_roots,
            });
        }
    }
    out
}

fn secret(
    inline: Option<String>,
    file: Option<String>,
    what: &str,
    base_dir: &Path,
) -> Result<Secret, String> {
    match (inline, file) {
        (Some(s), None) if !s.is_empty() => Ok(Secret::new(s)),
        (None, Some(path)) => {
            let path: PathBuf = base_dir.join(path);
            std::fs::read_to_string(&path)
                .map(|s| Secret::new(s.trim().to_owned()))
                .map_err(|e| format!("cannot read {what}_file {}: {e}", path.display()))
        }
        _ => Err(format!("exactly one of {what} or {what}_file is required")),
    }
}

fn dns(dns: schema::Dns, base_dir: &Path) -> Result<DnsProvider, String> {
    Ok(match dns {
        schema::Dns::Rfc2136(r) => {
            let server: SocketAddr = r
                .server
                .parse()
                .map_err(|e| format!("server {:?} is not IP:PORT: {e}", r.server))?;
            let algorithm = match r.algorithm.as_deref().unwrap_or("hmac-sha256") {
                "hmac-sha256" => TsigAlgorithm::HmacSha256,
                "hmac-sha384" => TsigAlgorithm::HmacSha384,
                "hmac-sha512" => TsigAlgorithm::HmacSha512,
                other => {
                    return Err(format!(
                        "algorithm {other:?} is not hmac-sha256, hmac-sha384 or hmac-sha512"
                    ));
                }
            };
            if r.key_name.is_empty() {
                return Err("key_name must not be empty".into());
            }
            DnsProvider::Rfc2136(Rfc2136 {
                server,
                zone: r.zone,
                key_name: r.key_name,
                algorithm,
                secret: secret(r.secret, r.secret_file, "secret", base_dir)?,
            })
        }
        schema::Dns::Exec(e) => {
            if e.command.is_empty() {
                return Err("command must not be empty".into());
            }
            DnsProvider::Exec(ExecHook {
                command: base_dir.join(e.command),
                args: e.args,
                timeout: e.timeout_seconds.map_or(DEFAULT_EXEC_TIMEOUT, Duration::from_secs),
            })
        }
        schema::Dns::Cloudflare(c) => DnsProvider::Cloudflare(Cloudflare {
            api_token: secret(c.api_token, c.api_token_file, "api_token", base_dir)?,
            zone_id: c.zone_id,
            api_url: c.api_url.unwrap_or_else(|| DEFAULT_CLOUDFLARE_API.to_owned()),
        }),
        schema::Dns::Route53(r) => {
            if r.hosted_zone_id.as_deref().is_some_and(str::is_empty)
                || r.profile.as_deref().is_some_and(str::is_empty)
            {
                return Err("hosted_zone_id and profile must not be empty when given".into());
            }
            DnsProvider::Route53(Route53 {
                hosted_zone_id: r.hosted_zone_id,
                profile: r.profile,
                credentials_file: r.credentials_file.map(|f| base_dir.join(f)),
                region: r.region.unwrap_or_else(|| DEFAULT_ROUTE53_REGION.to_owned()),
                api_url: r.api_url.unwrap_or_else(|| DEFAULT_ROUTE53_API.to_owned()),
            })
        }
    })
}

fn propagation(p: Option<schema::Propagation>, errors: &mut Errors<'_>) -> Propagation {
    let mut out = Propagation::default();
    let Some(p) = p else { return out };
    if let Some(t) = p.timeout_seconds {
        if *t.get_ref() == 0 {
            errors.push(&t.span(), Problem::Acme("timeout_seconds must be at least 1".into()));
        }
        out.timeout = Duration::from_secs(*t.get_ref());
    }
    if let Some(i) = p.interval_ms {
        if *i.get_ref() == 0 {
            errors.push(&i.span(), Problem::Acme("interval_ms must be at least 1".into()));
        }
        out.interval = Duration::from_millis(*i.get_ref());
    }
    for r in p.resolvers {
        match r.get_ref().parse::<SocketAddr>() {
            Ok(addr) => out.resolvers.push(addr),
            Err(e) => errors.push(
                &r.span(),
                Problem::InvalidSocketAddr { value: r.get_ref().clone(), reason: e.to_string() },
            ),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use gatehouse_model::Hostname;

    use super::*;

    const ISSUER: &str = r#"
[[acme.issuers]]
name = "pebble"
directory_url = "https://127.0.0.1:14000/dir"
contact = ["mailto:ops@example.test"]
ca_roots = "pebble-ca.pem"
dns = { provider = "rfc2136", server = "127.0.0.1:5353", key_name = "k", secret = "c2VjcmV0" }
propagation = { timeout_seconds = 30, interval_ms = 100, resolvers = ["127.0.0.1:5353"] }
"#;

    fn parse(text: &str) -> Result<crate::Config, Vec<String>> {
        crate::parse(text, Path::new("t.toml"), Path::new("/base"))
            .map_err(|e| e.errors().iter().map(|e| e.to_string()).collect())
    }

    #[test]
    fn an_issuer_and_a_certified_listener_are_read() {
        let text = format!(
            "{ISSUER}\n[[gateways]]\nname = \"g\"\n[[gateways.listeners]]\nname = \"www\"\n\
             port = 443\nprotocol = \"HTTPS\"\nhostname = \"www.example.test\"\n\
             tls = {{ acme = {{ issuer = \"pebble\", renew_before_seconds = 60 }} }}\n"
        );
        let config = parse(&text).unwrap_or_else(|e| panic!("{e:?}"));
        let issuer = &config.acme.issuers[0];
        assert_eq!(issuer.name, "pebble");
        assert_eq!(issuer.ca_roots.as_deref(), Some(Path::new("/base/pebble-ca.pem")));
        assert_eq!(issuer.propagation.interval, Duration::from_millis(100));
        assert_eq!(issuer.dns.kind(), "rfc2136");
        let request = &config.acme.requests[0];
        assert_eq!(request.listener.name, "www");
        assert_eq!(request.request.issuer, "pebble");
        assert_eq!(request.request.names, vec![Hostname::parse("www.example.test").unwrap()]);
        assert_eq!(request.request.renew_before, Some(Duration::from_secs(60)));
        // The secret never shows in debug output.
        assert!(!format!("{issuer:?}").contains("c2VjcmV0"));
    }

    #[test]
    fn bad_acme_settings_are_reported_with_their_place() {
        let text = r#"
[[acme.issuers]]
name = "x"
directory_url = "http://ca.example.test/dir"
dns = { provider = "rfc2136", server = "nowhere", key_name = "k", secret = "s" }

[[gateways]]
name = "g"
[[gateways.listeners]]
name = "l"
port = 443
protocol = "HTTPS"
tls = { acme = { issuer = "missing" } }
"#;
        let errors = parse(text).expect_err("invalid");
        let joined = errors.join("\n");
        assert!(joined.contains("t.toml:4:17") && joined.contains("https://"), "{joined}");
        assert!(joined.contains("t.toml:5:7") && joined.contains("not IP:PORT"), "{joined}");
        assert!(joined.contains("no [[acme.issuers]] named \"missing\""), "{joined}");
        assert!(joined.contains("set hostname"), "{joined}");
    }

    #[test]
    fn route53_settings_are_read_with_defaults() {
        let text = r#"
[[acme.issuers]]
name = "aws"
directory_url = "https://ca.example.test/dir"
dns = { provider = "route53", profile = "dns", credentials_file = "aws/credentials" }
"#;
        let config = parse(text).unwrap_or_else(|e| panic!("{e:?}"));
        let DnsProvider::Route53(r) = &config.acme.issuers[0].dns else {
            panic!("not route53: {:?}", config.acme.issuers[0].dns);
        };
        assert_eq!(r.profile.as_deref(), Some("dns"));
        assert_eq!(r.credentials_file.as_deref(), Some(Path::new("/base/aws/credentials")));
        assert_eq!(
            (r.region.as_str(), r.api_url.as_str()),
            (DEFAULT_ROUTE53_REGION, DEFAULT_ROUTE53_API)
        );
        assert_eq!(r.hosted_zone_id, None);
        let errors = parse(&text.replace("profile = \"dns\"", "hosted_zone = \"Z1\""))
            .expect_err("unknown key");
        assert!(errors.join("\n").contains("hosted_zone"), "{errors:?}");
    }

    #[test]
    fn unknown_provider_keys_are_rejected() {
        let text = r#"
[[acme.issuers]]
name = "x"
directory_url = "https://ca.example.test/dir"
dns = { provider = "exec", command = "/bin/true", colour = "blue" }
"#;
        let errors = parse(text).expect_err("invalid");
        assert!(errors.join("\n").contains("colour"), "{errors:?}");
    }
}
