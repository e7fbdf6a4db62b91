//! RFC 2136 dynamic update signed with TSIG (RFC 8945), for BIND, Knot and PowerDNS.

use std::net::SocketAddr;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use gatehouse_model::acme::{Rfc2136, TsigAlgorithm};
use hickory_net::client::{Client, ClientHandle};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::udp::UdpClientStream;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::TXT;
use hickory_proto::rr::rdata::tsig::TsigAlgorithm as Alg;
use hickory_proto::rr::{Name, RData, Record, RecordType, TSigner};

use super::lookup::{self, QUERY_TIMEOUT};
use super::{DnsError, DnsProvider, TxtRecord};

/// TTL of challenge records: short, they live for seconds.
const TTL: u32 = 60;
/// Allowed clock difference for TSIG (RFC 8945 recommends 300 s).
const FUDGE: u16 = 300;

/// Publishes records by dynamic update to one primary server.
#[derive(Clone)]
pub struct Rfc2136Provider {
    server: SocketAddr,
    zone: Option<Name>,
    key_name: String,
    signer: TSigner,
}

impl std::fmt::Debug for Rfc2136Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rfc2136Provider")
            .field("server", &self.server)
            .field("zone", &self.zone)
            .field("key_name", &self.key_name)
            .finish_non_exhaustive()
    }
}

impl Rfc2136Provider {
    /// Checks the settings (name syntax, base64 secret) and builds the signer.
    pub fn new(spec: &Rfc2136) -> Result<Self, DnsError> {
        let settings = |message: String| DnsError::Settings { provider: "rfc2136", message };
        let secret = STANDARD
            .decode(spec.secret.expose().trim())
            .map_err(|e| settings(format!("TSIG secret is not base64: {e}")))?;
        if secret.is_empty() {
            return Err(settings("TSIG secret is empty".into()));
        }
        let key_name = lookup::name(&spec.key_name)?;
        let algorithm = match spec.algorithm {
            TsigAlgorithm::HmacSha256 => Alg::HmacSha256,
            TsigAlgorithm::HmacSha384 => Alg::HmacSha384,
            TsigAlgorithm::HmacSha512 => Alg::HmacSha512,
        };
        let signer = TSigner::new(secret, algorithm, key_name, FUDGE)
            .map_err(|e| settings(format!("TSIG key: {e}")))?;
        let zone = spec.zone.as_deref().map(lookup::name).transpose()?;
        Ok(Self { server: spec.server, zone, key_name: spec.key_name.clone(), signer })
    }

    /// The configured zone, or the one whose SOA the server names for `fqdn`.
    async fn zone_of(&self, fqdn: &Name) -> Result<Name, DnsError> {
        if let Some(zone) = &self.zone {
            return Ok(zone.clone());
        }
        let mut candidate = fqdn.clone();
        loop {
            let answer = lookup::query(self.server, &candidate, RecordType::SOA, false).await?;
            if let Some(soa) = answer
                .answers
                .iter()
                .chain(answer.authorities.iter())
                .find(|r| r.record_type() == RecordType::SOA)
            {
                return Ok(soa.name.clone());
            }
            if candidate.num_labels() <= 1 {
                return Err(DnsError::NoZone(fqdn.to_string()));
            }
            candidate = candidate.base_name();
        }
    }

    fn record(fqdn: &Name, value: &str) -> Record {
        Record::from_rdata(fqdn.clone(), TTL, RData::TXT(TXT::new(vec![value.to_owned()])))
    }

    fn client(&self) -> (Client<TokioRuntimeProvider>, tokio::task::JoinHandle<()>) {
        let stream = UdpClientStream::builder(self.server, TokioRuntimeProvider::default())
            .with_timeout(Some(QUERY_TIMEOUT))
            .with_signer(Some(self.signer.clone()))
            .build();
        let (client, bg) = Client::<TokioRuntimeProvider>::from_sender(stream);
        let bg = tokio::spawn(async move {
            let _ = bg.await;
        });
        (client, bg)
    }

    /// Turns the update's outcome into a clear error; hickory reports a refused TSIG (the
    /// server's reply carries an empty MAC) as an unsupported "truncated HMAC".
    fn judge(
        &self,
        name: &Name,
        outcome: Result<Message, hickory_net::NetError>,
    ) -> Result<(), DnsError> {
        let server = self.server.to_string();
        match outcome {
            Ok(message) => match message.metadata.response_code {
                ResponseCode::NoError => Ok(()),
                ResponseCode::NotAuth | ResponseCode::BADSIG | ResponseCode::BADKEY => {
                    Err(DnsError::TsigRejected { server, key: self.key_name.clone() })
                }
                rcode => Err(DnsError::UpdateRefused {
                    server,
                    name: name.to_string(),
                    rcode: rcode.to_string(),
                }),
            },
            Err(e) => {
                let message = e.to_string();
                if is_tsig_failure(&message) {
                    Err(DnsError::TsigRejected { server, key: self.key_name.clone() })
                } else {
                    Err(DnsError::Unreachable { server, message })
                }
            }
        }
    }
}

/// Whether a hickory error text is its way of saying the TSIG on the reply did not verify.
fn is_tsig_failure(message: &str) -> bool {
    let lower = message.to_ascii_lowercase();
    lower.contains("truncated hmac") || lower.contains("tsig")
}

#[async_trait]
impl DnsProvider for Rfc2136Provider {
    fn name(&self) -> &'static str {
        "rfc2136"
    }

    async fn present(&self, record: &TxtRecord) -> Result<(), DnsError> {
        let fqdn = lookup::name(&record.fqdn)?;
        let zone = self.zone_of(&fqdn).await?;
        let (mut client, bg) = self.client();
        // Append (RFC 2136 §2.5.1): other values at the same name stay.
        let outcome = client
            .append(Self::record(&fqdn, &record.value), zone, false)
            .await
            .map(|r| r.into_message());
        bg.abort();
        self.judge(&fqdn, outcome)
    }

    async fn cleanup(&self, record: &TxtRecord) -> Result<(), DnsError> {
        let fqdn = lookup::name(&record.fqdn)?;
        let zone = self.zone_of(&fqdn).await?;
        let (mut client, bg) = self.client();
        // Delete this value only (RFC 2136 §2.5.4); absent values are ignored by the server.
        let outcome = client
            .delete_by_rdata(Self::record(&fqdn, &record.value), zone)
            .await
            .map(|r| r.into_message());
        bg.abort();
        self.judge(&fqdn, outcome)
    }
}

#[cfg(test)]
mod tests {
    use gatehouse_model::acme::Secret;

    use super::*;

    fn spec(secret: &str) -> Rfc2136 {
        Rfc2136 {
            server: "127.0.0.1:53".parse().expect("addr"),
            zone: Some("example.test".into()),
            key_name: "acme-key".into(),
            algorithm: TsigAlgorithm::HmacSha256,
            secret: Secret::new(secret),
        }
    }

    #[test]
    fn secrets_must_be_base64() {
        let err = Rfc2136Provider::new(&spec("not base64!")).expect_err("rejected");
        assert!(err.to_string().contains("not base64"), "{err}");
        assert!(Rfc2136Provider::new(&spec("c2VjcmV0LXNlY3JldA==")).is_ok());
    }

    #[test]
    fn hickorys_truncated_hmac_means_a_refused_signature() {
        assert!(is_tsig_failure("Please file an issue ... to support truncated HMACs with TSIG"));
        assert!(!is_tsig_failure("request timed out"));
    }
}
