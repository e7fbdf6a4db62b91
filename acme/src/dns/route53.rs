//! Amazon Route53 (feature `route53`): the REST/XML API, every request signed with SigV4
//! (`aws-sigv4`, no AWS SDK runtime) and sent over our hyper + rustls client.
//!
//! A TXT name may hold other values (a name and its wildcard share one; another client may be
//! validating too), so `present` reads the record set and UPSERTs it with our value added, and
//! `cleanup` UPSERTs it without our value (DELETE when ours was the last). Calls of one
//! provider are serialised, so two values for one name never overwrite each other here.
//! `present` returns once Route53 reports the change `INSYNC` (GetChange), i.e. on every
//! Route53 name server; the propagation check then confirms it.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use instant_acme::BodyWrapper;
use tokio::sync::Mutex;

use gatehouse_model::acme::Route53;

use super::aws_credentials::{self, AwsCredentials};
use super::{DnsError, DnsProvider, TxtRecord};
use crate::http::{REQUEST_TIMEOUT, api_client};

/// Largest API answer read.
const MAX_BODY: usize = 1 << 20;
/// The API version in every path.
const VERSION: &str = "2013-04-01";
/// The SigV4 service name.
const SERVICE: &str = "route53";
/// TTL of a record set we create (an existing set keeps its own).
const TTL: u64 = 60;
/// How long a change may take to become `INSYNC`.
const INSYNC_TIMEOUT: Duration = Duration::from_secs(180);
/// First and longest wait between two GetChange calls.
const POLL_FIRST: Duration = Duration::from_millis(250);
const POLL_MAX: Duration = Duration::from_secs(5);

/// Publishes records through the Route53 API.
pub struct Route53Provider {
    api: String,
    spec: Route53,
    client: HyperClient<HttpsConnector<HttpConnector>, BodyWrapper<Bytes>>,
    /// Serialises read-modify-write of record sets.
    writing: Mutex<()>,
}

impl std::fmt::Debug for Route53Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route53Provider")
            .field("api", &self.api)
            .field("hosted_zone_id", &self.spec.hosted_zone_id)
            .finish_non_exhaustive()
    }
}

/// One TXT record set as Route53 holds it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct RecordSet {
    ttl: Option<u64>,
    /// The values without their quotes.
    values: Vec<String>,
}

impl Route53Provider {
    /// A provider for the configured API; plain HTTP is refused except on loopback.
    pub fn new(spec: &Route53) -> Result<Self, DnsError> {
        let settings = |message: String| DnsError::Settings { provider: "route53", message };
        let (api, client) = api_client(&spec.api_url).map_err(settings)?;
        if spec.region.is_empty() {
            return Err(settings("region must not be empty".into()));
        }
        Ok(Self { api, spec: spec.clone(), client, writing: Mutex::new(()) })
    }

    fn fail(message: impl Into<String>) -> DnsError {
        DnsError::Provider { provider: "route53", message: message.into() }
    }

    /// One signed call; the answer's body (as text) when the status is 2xx, else the API's
    /// error code and message.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> Result<String, DnsError> {
        let credentials = aws_credentials::resolve(
            self.spec.profile.as_deref(),
            self.spec.credentials_file.as_deref(),
        )
        .map_err(|message| DnsError::Settings { provider: "route53", message })?;
        let url = format!("{}{path}", self.api);
        let body = body.unwrap_or_default().into_bytes();
        let mut headers = vec![("host".to_owned(), host_header(&url)?)];
        if !body.is_empty() {
            headers.push(("content-type".to_owned(), "text/xml".to_owned()));
        }
        let signed = sign_headers(
            method.as_str(),
            &url,
            &headers,
            &body,
            &credentials,
            &self.spec.region,
            SERVICE,
            SystemTime::now(),
        )
        .map_err(Self::fail)?;
        let mut req = Request::builder().method(method.clone()).uri(&url);
        for (name, value) in headers.iter().chain(&signed) {
            req = req.header(name.as_str(), value.as_str());
        }
        let req = req.body(BodyWrapper::from(body)).map_err(|e| Self::fail(e.to_string()))?;
        let rsp = tokio::time::timeout(REQUEST_TIMEOUT, self.client.request(req))
            .await
            .map_err(|_| Self::fail(format!("no answer in {REQUEST_TIMEOUT:?}")))?
            .map_err(|e| Self::fail(format!("{method} {path}: {e}")))?;
        let status = rsp.status();
        #[allow(clippy::disallowed_methods, reason = "bounded by Limited")]
        let bytes = Limited::new(rsp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| Self::fail(format!("reading answer: {e}")))?
            .to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if status.is_success() {
            return Ok(text);
        }
        Err(Self::fail(format!("{method} {path}: {status}: {}", api_error(status, &text))))
    }

    /// The hosted zone holding `fqdn`: configured, else the longest matching public zone
    /// found with ListHostedZonesByName.
    async fn zone(&self, fqdn: &str) -> Result<String, DnsError> {
        if let Some(id) = &self.spec.hosted_zone_id {
            return Ok(id.trim_start_matches("/hostedzone/").to_owned());
        }
        let mut candidate = fqdn.trim_end_matches('.');
        while let Some((_, parent)) = candidate.split_once('.') {
            candidate = parent;
            let name = format!("{candidate}.");
            let path = format!("/{VERSION}/hostedzonesbyname?dnsname={name}&maxitems=10");
            let text = self.call(Method::GET, &path, None).await?;
            if let Some(id) = zone_id(&text, &name).map_err(Self::fail)? {
                return Ok(id);
            }
        }
        Err(DnsError::NoZone(fqdn.to_owned()))
    }

    async fn record_set(&self, zone: &str, fqdn: &str) -> Result<RecordSet, DnsError> {
        let path = format!("/{VERSION}/hostedzone/{zone}/rrset?name={fqdn}&type=TXT&maxitems=1");
        let text = self.call(Method::GET, &path, None).await?;
        txt_set(&text, fqdn).map_err(Self::fail)
    }

    /// Sends one change and returns its id.
    async fn change(
        &self,
        zone: &str,
        action: &str,
        fqdn: &str,
        set: &RecordSet,
    ) -> Result<String, DnsError> {
        let path = format!("/{VERSION}/hostedzone/{zone}/rrset/");
        let body = change_batch(action, fqdn, set);
        let text = self.call(Method::POST, &path, Some(body)).await?;
        change_info(&text).map(|(id, _)| id).map_err(Self::fail)
    }

    /// Polls GetChange until the change is `INSYNC`.
    async fn wait_insync(&self, id: &str) -> Result<(), DnsError> {
        let deadline = tokio::time::Instant::now() + INSYNC_TIMEOUT;
        let mut wait = POLL_FIRST;
        loop {
            let text = self.call(Method::GET, &format!("/{VERSION}/change/{id}"), None).await?;
            let (_, status) = change_info(&text).map_err(Self::fail)?;
            if status == "INSYNC" {
                return Ok(());
            }
            if tokio::time::Instant::now() + wait > deadline {
                return Err(Self::fail(format!(
                    "change {id} still {status} after {INSYNC_TIMEOUT:?}"
                )));
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 3 / 2).min(POLL_MAX);
        }
    }
}

#[async_trait]
impl DnsProvider for Route53Provider {
    fn name(&self) -> &'static str {
        "route53"
    }

    async fn present(&self, record: &TxtRecord) -> Result<(), DnsError> {
        let zone = self.zone(&record.fqdn).await?;
        let id = {
            let _writing = self.writing.lock().await;
            let mut set = self.record_set(&zone, &record.fqdn).await?;
            if set.values.contains(&record.value) {
                return Ok(());
            }
            set.values.push(record.value.clone());
            set.ttl = set.ttl.or(Some(TTL));
            self.change(&zone, "UPSERT", &record.fqdn, &set).await?
        };
        self.wait_insync(&id).await
    }

    async fn cleanup(&self, record: &TxtRecord) -> Result<(), DnsError> {
        let zone = self.zone(&record.fqdn).await?;
        let _writing = self.writing.lock().await;
        let set = self.record_set(&zone, &record.fqdn).await?;
        if !set.values.contains(&record.value) {
            return Ok(());
        }
        let rest = RecordSet {
            ttl: set.ttl,
            values: set.values.iter().filter(|v| **v != record.value).cloned().collect(),
        };
        // A DELETE must name the set exactly as it is; an UPSERT replaces it.
        if rest.values.is_empty() {
            self.change(&zone, "DELETE", &record.fqdn, &set).await?;
        } else {
            self.change(&zone, "UPSERT", &record.fqdn, &rest).await?;
        }
        Ok(())
    }
}

/// `host[:port]` of a URL, for the signed `host` header.
fn host_header(url: &str) -> Result<String, DnsError> {
    let uri: http::Uri =
        url.parse().map_err(|e| Route53Provider::fail(format!("bad URL {url}: {e}")))?;
    uri.authority()
        .map(|a| a.as_str().to_owned())
        .ok_or_else(|| Route53Provider::fail(format!("URL without host: {url}")))
}

/// The SigV4 headers (`x-amz-date`, `authorization`, and `x-amz-security-token` with a
/// session token) for one request whose other signed headers are `headers`.
#[allow(clippy::too_many_arguments, reason = "one request's parts, named at the call")]
pub(crate) fn sign_headers(
    method: &str,
    url: &str,
    headers: &[(String, String)],
    body: &[u8],
    credentials: &AwsCredentials,
    region: &str,
    service: &str,
    time: SystemTime,
) -> Result<Vec<(String, String)>, String> {
    let identity: Identity = Credentials::new(
        &credentials.access_key_id,
        &credentials.secret_access_key,
        credentials.session_token.clone(),
        None,
        "gatehouse",
    )
    .into();
    let params: aws_sigv4::http_request::SigningParams<'_> = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| format!("SigV4 parameters: {e}"))?
        .into();
    let request = SignableRequest::new(
        method,
        url,
        headers.iter().map(|(n, v)| (n.as_str(), v.as_str())),
        SignableBody::Bytes(body),
    )
    .map_err(|e| format!("SigV4: {e}"))?;
    let (instructions, _signature) =
        sign(request, &params).map_err(|e| format!("SigV4: {e}"))?.into_parts();
    Ok(instructions.headers().map(|(n, v)| (n.to_owned(), v.to_owned())).collect())
}

/// `<Code>: <Message>` of a Route53 error document (every message of an InvalidChangeBatch).
fn api_error(status: StatusCode, text: &str) -> String {
    let Ok(doc) = roxmltree::Document::parse(text) else {
        return if text.is_empty() {
            "not a Route53 answer (empty)".to_owned()
        } else {
            format!("not a Route53 answer ({} bytes)", text.len())
        };
    };
    let all = |name: &str| -> Vec<String> {
        doc.descendants()
            .filter(|n| n.has_tag_name(name))
            .filter_map(|n| n.text().map(str::to_owned))
            .collect()
    };
    let code = all("Code").into_iter().next().unwrap_or_else(|| status.to_string());
    let messages = all("Message");
    if messages.is_empty() { code } else { format!("{code}: {}", messages.join("; ")) }
}

/// The text of the first `name` element under `parent` (by tag name).
fn child_text<'a>(parent: roxmltree::Node<'a, '_>, name: &str) -> Option<&'a str> {
    parent.children().find(|n| n.has_tag_name(name)).and_then(|n| n.text())
}

fn parse(text: &str) -> Result<roxmltree::Document<'_>, String> {
    roxmltree::Document::parse(text).map_err(|e| format!("answer is not XML: {e}"))
}

/// The id of the hosted zone named exactly `name` in a ListHostedZonesByName answer; a public
/// zone wins over a private one of the same name.
fn zone_id(text: &str, name: &str) -> Result<Option<String>, String> {
    let doc = parse(text)?;
    let mut found: Option<(bool, String)> = None;
    for zone in doc.descendants().filter(|n| n.has_tag_name("HostedZone")) {
        let same = child_text(zone, "Name").is_some_and(|n| n.eq_ignore_ascii_case(name));
        let Some(id) = child_text(zone, "Id").filter(|_| same) else { continue };
        let private = zone
            .children()
            .find(|n| n.has_tag_name("Config"))
            .and_then(|c| child_text(c, "PrivateZone"))
            == Some("true");
        if found.as_ref().is_none_or(|(was_private, _)| *was_private && !private) {
            found = Some((private, id.trim_start_matches("/hostedzone/").to_owned()));
        }
    }
    Ok(found.map(|(_, id)| id))
}

/// The TXT set named `fqdn` in a ListResourceRecordSets answer (which starts at that name
/// but may go on with the next ones); empty when there is none.
fn txt_set(text: &str, fqdn: &str) -> Result<RecordSet, String> {
    let doc = parse(text)?;
    for set in doc.descendants().filter(|n| n.has_tag_name("ResourceRecordSet")) {
        let name = child_text(set, "Name").unwrap_or_default();
        // Route53 writes some characters as octal escapes; ours never need them.
        if !name.eq_ignore_ascii_case(fqdn) || child_text(set, "Type") != Some("TXT") {
            continue;
        }
        let ttl = child_text(set, "TTL").and_then(|t| t.parse().ok());
        let values = set
            .descendants()
            .filter(|n| n.has_tag_name("Value"))
            .filter_map(|n| n.text())
            .map(unquote)
            .collect();
        return Ok(RecordSet { ttl, values });
    }
    Ok(RecordSet::default())
}

/// A TXT value as written in Route53 (`"abc"`, or several quoted strings) as one string.
fn unquote(value: &str) -> String {
    let value = value.trim();
    if value.starts_with('"') && value.ends_with('"') && value.len() >= 2 {
        value[1..value.len() - 1].split("\" \"").collect::<Vec<_>>().concat()
    } else {
        value.to_owned()
    }
}

/// `(Id, Status)` of the ChangeInfo in a ChangeResourceRecordSets or GetChange answer.
fn change_info(text: &str) -> Result<(String, String), String> {
    let doc = parse(text)?;
    let info = doc
        .descendants()
        .find(|n| n.has_tag_name("ChangeInfo"))
        .ok_or("answer has no ChangeInfo")?;
    let id = child_text(info, "Id").ok_or("ChangeInfo without Id")?;
    let status = child_text(info, "Status").ok_or("ChangeInfo without Status")?;
    Ok((id.trim_start_matches("/change/").to_owned(), status.to_owned()))
}

/// A ChangeResourceRecordSets request body with one change.
fn change_batch(action: &str, fqdn: &str, set: &RecordSet) -> String {
    let records: String = set
        .values
        .iter()
        .map(|v| format!("<ResourceRecord><Value>\"{}\"</Value></ResourceRecord>", escape(v)))
        .collect();
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
         <ChangeResourceRecordSetsRequest xmlns=\"https://route53.amazonaws.com/doc/{VERSION}/\">\
         <ChangeBatch><Comment>gatehouse ACME DNS-01</Comment><Changes><Change>\
         <Action>{action}</Action><ResourceRecordSet><Name>{name}</Name><Type>TXT</Type>\
         <TTL>{ttl}</TTL><ResourceRecords>{records}</ResourceRecords></ResourceRecordSet>\
         </Change></Changes></ChangeBatch></ChangeResourceRecordSetsRequest>",
        name = escape(fqdn),
        ttl = set.ttl.unwrap_or(TTL),
    )
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS's SigV4 test suite, `get-vanilla`: the one request every implementation must sign
    /// the same way.
    #[test]
    fn the_aws_get_vanilla_test_vector_signs_as_published() {
        let credentials = AwsCredentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
        };
        // 2015-08-30T12:36:00Z
        let time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_440_938_160);
        let headers = vec![("host".to_owned(), "example.amazonaws.com".to_owned())];
        let signed = sign_headers(
            "GET",
            "https://example.amazonaws.com/",
            &headers,
            b"",
            &credentials,
            "us-east-1",
            "service",
            time,
        )
        .unwrap();
        let get = |name: &str| signed.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        assert_eq!(get("x-amz-date"), Some("20150830T123600Z"));
        assert_eq!(
            get("authorization"),
            Some(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
                 SignedHeaders=host;x-amz-date, \
                 Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
            )
        );
    }

    #[test]
    fn zones_record_sets_and_changes_are_read_from_route53_xml() {
        let zones = r#"<?xml version="1.0"?>
<ListHostedZonesByNameResponse xmlns="https://route53.amazonaws.com/doc/2013-04-01/">
  <HostedZones>
    <HostedZone><Id>/hostedzone/ZPRIVATE</Id><Name>example.com.</Name>
      <Config><PrivateZone>true</PrivateZone></Config></HostedZone>
    <HostedZone><Id>/hostedzone/ZPUBLIC</Id><Name>example.com.</Name>
      <Config><PrivateZone>false</PrivateZone></Config></HostedZone>
    <HostedZone><Id>/hostedzone/ZOTHER</Id><Name>example.net.</Name></HostedZone>
  </HostedZones><DNSName>example.com.</DNSName><IsTruncated>false</IsTruncated><MaxItems>10</MaxItems>
</ListHostedZonesByNameResponse>"#;
        assert_eq!(zone_id(zones, "example.com.").unwrap().as_deref(), Some("ZPUBLIC"));
        assert_eq!(zone_id(zones, "www.example.com.").unwrap(), None);

        let sets = r#"<ListResourceRecordSetsResponse xmlns="https://route53.amazonaws.com/doc/2013-04-01/">
  <ResourceRecordSets>
    <ResourceRecordSet><Name>_acme-challenge.example.com.</Name><Type>TXT</Type><TTL>300</TTL>
      <ResourceRecords><ResourceRecord><Value>"one"</Value></ResourceRecord>
        <ResourceRecord><Value>"tw" "o"</Value></ResourceRecord></ResourceRecords>
    </ResourceRecordSet>
  </ResourceRecordSets><IsTruncated>false</IsTruncated><MaxItems>1</MaxItems>
</ListResourceRecordSetsResponse>"#;
        let set = txt_set(sets, "_acme-challenge.example.com.").unwrap();
        assert_eq!(set, RecordSet { ttl: Some(300), values: vec!["one".into(), "two".into()] });
        assert_eq!(
            txt_set(sets, "_acme-challenge.www.example.com.").unwrap(),
            RecordSet::default()
        );

        let change = r#"<ChangeResourceRecordSetsResponse><ChangeInfo><Id>/change/C42</Id>
<Status>PENDING</Status><SubmittedAt>2026-01-01T00:00:00Z</SubmittedAt></ChangeInfo>
</ChangeResourceRecordSetsResponse>"#;
        assert_eq!(change_info(change).unwrap(), ("C42".into(), "PENDING".into()));

        let error = r#"<ErrorResponse><Error><Type>Sender</Type><Code>InvalidChangeBatch</Code>
<Message>Tried to delete resource record set but it was not found</Message></Error></ErrorResponse>"#;
        assert_eq!(
            api_error(StatusCode::BAD_REQUEST, error),
            "InvalidChangeBatch: Tried to delete resource record set but it was not found"
        );
        assert_eq!(api_error(StatusCode::BAD_GATEWAY, ""), "not a Route53 answer (empty)");
    }

    #[test]
    fn a_change_batch_carries_every_value_quoted() {
        let set = RecordSet { ttl: Some(300), values: vec!["a".into(), "b<".into()] };
        let body = change_batch("UPSERT", "_acme-challenge.example.com.", &set);
        let doc = roxmltree::Document::parse(&body).unwrap();
        let values: Vec<&str> = doc
            .descendants()
            .filter(|n| n.has_tag_name("Value"))
            .filter_map(|n| n.text())
            .collect();
        assert_eq!(values, ["\"a\"", "\"b<\""]);
        assert!(body.contains("<Action>UPSERT</Action>") && body.contains("<TTL>300</TTL>"));
    }

    #[test]
    fn plain_http_is_only_for_loopback() {
        let spec = |url: &str| Route53 {
            hosted_zone_id: None,
            profile: None,
            credentials_file: None,
            region: "us-east-1".into(),
            api_url: url.into(),
        };
        assert!(Route53Provider::new(&spec("https://route53.amazonaws.com")).is_ok());
        assert!(Route53Provider::new(&spec("http://127.0.0.1:9")).is_ok());
        let err = Route53Provider::new(&spec("http://route53.example.invalid")).expect_err("no");
        assert!(err.to_string().contains("https"), "{err}");
    }
}
