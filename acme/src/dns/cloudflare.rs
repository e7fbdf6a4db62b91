//! Cloudflare v4 API: TXT records created and deleted by id, with an API token.

use std::collections::HashMap;

use async_trait::async_trait;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use instant_acme::BodyWrapper;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::Mutex;

use gatehouse_model::acme::Cloudflare;

use super::{DnsError, DnsProvider, TxtRecord};
use crate::http::{REQUEST_TIMEOUT, api_client};

/// Largest API answer read.
const MAX_BODY: usize = 1 << 20;

/// Publishes records through the Cloudflare API.
pub struct CloudflareProvider {
    api: String,
    token: String,
    zone_id: Option<String>,
    client: HyperClient<HttpsConnector<HttpConnector>, BodyWrapper<Bytes>>,
    /// Record ids of what we created, so cleanup deletes exactly those.
    created: Mutex<HashMap<TxtRecord, String>>,
}

impl std::fmt::Debug for CloudflareProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudflareProvider")
            .field("api", &self.api)
            .field("zone_id", &self.zone_id)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Envelope {
    success: bool,
    #[serde(default)]
    errors: Vec<ApiMessage>,
    #[serde(default)]
    result: serde_json::Value,
}

#[derive(Deserialize)]
struct ApiMessage {
    #[serde(default)]
    code: i64,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct WithId {
    id: String,
}

impl CloudflareProvider {
    /// A provider for the configured API; plain HTTP is refused except on loopback.
    pub fn new(spec: &Cloudflare) -> Result<Self, DnsError> {
        let settings = |message: String| DnsError::Settings { provider: "cloudflare", message };
        let (api, client) = api_client(&spec.api_url).map_err(settings)?;
        if spec.api_token.expose().is_empty() {
            return Err(settings("api_token is empty".into()));
        }
        Ok(Self {
            api,
            token: spec.api_token.expose().to_owned(),
            zone_id: spec.zone_id.clone(),
            client,
            created: Mutex::new(HashMap::new()),
        })
    }

    fn fail(message: impl Into<String>) -> DnsError {
        DnsError::Provider { provider: "cloudflare", message: message.into() }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<(StatusCode, Envelope), DnsError> {
        let bytes = match body {
            Some(v) => serde_json::to_vec(&v).map_err(|e| Self::fail(e.to_string()))?,
            None => Vec::new(),
        };
        let req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.api))
            .header(http::header::AUTHORIZATION, format!("Bearer {}", self.token))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(BodyWrapper::from(bytes))
            .map_err(|e| Self::fail(e.to_string()))?;
        let rsp = tokio::time::timeout(REQUEST_TIMEOUT, self.client.request(req))
            .await
            .map_err(|_| Self::fail(format!("no answer in {REQUEST_TIMEOUT:?}")))?
            .map_err(|e| Self::fail(format!("request failed: {e}")))?;
        let status = rsp.status();
        #[allow(clippy::disallowed_methods, reason = "bounded by Limited")]
        let body = Limited::new(rsp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| Self::fail(format!("reading answer: {e}")))?
            .to_bytes();
        let envelope: Envelope = serde_json::from_slice(&body)
            .map_err(|e| Self::fail(format!("answer ({status}) is not API JSON: {e}")))?;
        Ok((status, envelope))
    }

    fn check(status: StatusCode, envelope: &Envelope) -> Result<(), DnsError> {
        if envelope.success {
            return Ok(());
        }
        let errors = envelope
            .errors
            .iter()
            .map(|e| format!("{} ({})", e.message, e.code))
            .collect::<Vec<_>>()
            .join("; ");
        Err(Self::fail(format!("{status}: {errors}")))
    }

    async fn zone(&self, fqdn: &str) -> Result<String, DnsError> {
        if let Some(id) = &self.zone_id {
            return Ok(id.clone());
        }
        let mut candidate = fqdn.trim_end_matches('.');
        while let Some((_, parent)) = candidate.split_once('.') {
            candidate = parent;
            let (status, env) =
                self.call(Method::GET, &format!("/zones?name={candidate}"), None).await?;
            Self::check(status, &env)?;
            let zones: Vec<WithId> = serde_json::from_value(env.result).unwrap_or_default();
            if let Some(zone) = zones.into_iter().next() {
                return Ok(zone.id);
            }
        }
        Err(DnsError::NoZone(fqdn.to_owned()))
    }
}

#[async_trait]
impl DnsProvider for CloudflareProvider {
    fn name(&self) -> &'static str {
        "cloudflare"
    }

    async fn present(&self, record: &TxtRecord) -> Result<(), DnsError> {
        let zone = self.zone(&record.fqdn).await?;
        let body = json!({
            "type": "TXT",
            "name": record.fqdn.trim_end_matches('.'),
            "content": record.value,
            "ttl": 60,
        });
        let (status, env) =
            self.call(Method::POST, &format!("/zones/{zone}/dns_records"), Some(body)).await?;
        Self::check(status, &env)?;
        let created: WithId = serde_json::from_value(env.result)
            .map_err(|e| Self::fail(format!("created record has no id: {e}")))?;
        self.created.lock().await.insert(record.clone(), created.id);
        Ok(())
    }

    async fn cleanup(&self, record: &TxtRecord) -> Result<(), DnsError> {
        let zone = self.zone(&record.fqdn).await?;
        let known = self.created.lock().await.remove(record);
        let ids = match known {
            Some(id) => vec![id],
            // Not created by this process (a restart): find it by name and value.
            None => {
                let (status, env) = self
                    .call(
                        Method::GET,
                        &format!(
                            "/zones/{zone}/dns_records?type=TXT&name={}",
                            record.fqdn.trim_end_matches('.')
                        ),
                        None,
                    )
                    .await?;
                Self::check(status, &env)?;
                #[derive(Deserialize)]
                struct Rec {
                    id: String,
                    content: String,
                }
                let recs: Vec<Rec> = serde_json::from_value(env.result).unwrap_or_default();
                recs.into_iter()
                    .filter(|r| r.content.trim_matches('"') == record.value)
                    .map(|r| r.id)
                    .collect()
            }
        };
        for id in ids {
            let (status, env) =
                self.call(Method::DELETE, &format!("/zones/{zone}/dns_records/{id}"), None).await?;
            if status != StatusCode::NOT_FOUND {
                Self::check(status, &env)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use gatehouse_model::acme::Secret;

    use super::*;

    fn spec(url: &str) -> Cloudflare {
        Cloudflare { api_token: Secret::new("token"), zone_id: None, api_url: url.into() }
    }

    #[test]
    fn plain_http_is_only_for_loopback() {
        assert!(CloudflareProvider::new(&spec("https://api.example.invalid/client/v4")).is_ok());
        assert!(CloudflareProvider::new(&spec("http://127.0.0.1:9/v4")).is_ok());
        let err = CloudflareProvider::new(&spec("http://api.example.invalid/v4")).expect_err("no");
        assert!(err.to_string().contains("https"), "{err}");
    }
}
