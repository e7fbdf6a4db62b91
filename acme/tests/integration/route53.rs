//! The Route53 provider against an in-test server that speaks Route53's REST/XML wire format
//! (ListHostedZonesByName, ListResourceRecordSets, ChangeResourceRecordSets, GetChange) and
//! checks every request's SigV4 signature itself — canonical request, string to sign and the
//! HMAC-SHA256 key chain computed here with aws-lc-rs, not with the signing crate the provider
//! uses — answering 403 `SignatureDoesNotMatch` as AWS does.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

use aws_lc_rs::{digest, hmac};
use bytes::Bytes;
use gatehouse_acme::dns::{DnsProvider as _, Route53Provider, TxtRecord};
use gatehouse_model::acme::Route53;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::Mutex;

const KEY_ID: &str = "AKIDGATEHOUSETEST";
const SECRET: &str = "c2VjcmV0L2tleStmb3Ivcm91dGU1Mw==/test";
const API: &str = "2013-04-01";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_hex(data: &[u8]) -> String {
    hex(digest::digest(&digest::SHA256, data).as_ref())
}

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data.as_bytes()).as_ref().to_vec()
}

/// SigV4's URI encoding: unreserved characters stay, everything else is `%XX` (upper case).
fn uri_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One request as the verifier needs it.
struct Signed<'a> {
    method: &'a str,
    path: &'a str,
    query: &'a str,
    headers: Vec<(String, String)>,
    body: &'a [u8],
}

/// Checks the request's SigV4 `authorization` header against `secret`; `Err` says why not.
fn verify(
    req: &Signed<'_>,
    key_id: &str,
    secret: &str,
    region: &str,
    service: &str,
) -> Result<(), String> {
    let header = |name: &str| {
        req.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim())
    };
    let auth = header("authorization").ok_or("no authorization header")?;
    let rest = auth.strip_prefix("AWS4-HMAC-SHA256 ").ok_or("not AWS4-HMAC-SHA256")?;
    let mut fields = BTreeMap::new();
    for part in rest.split(", ") {
        let (k, v) = part.split_once('=').ok_or("malformed authorization")?;
        fields.insert(k, v);
    }
    let credential = fields.get("Credential").ok_or("no Credential")?;
    let mut scope = credential.split('/');
    let (id, date, reg, svc, term) =
        (scope.next(), scope.next(), scope.next(), scope.next(), scope.next());
    if id != Some(key_id) {
        return Err(format!("unknown access key {id:?}"));
    }
    let date = date.ok_or("no date in scope")?;
    if (reg, svc, term) != (Some(region), Some(service), Some("aws4_request")) {
        return Err(format!("wrong scope {credential}"));
    }
    let amz_date = header("x-amz-date").ok_or("no x-amz-date")?;
    if !amz_date.starts_with(date) {
        return Err("x-amz-date and scope disagree".into());
    }
    let signed_headers = fields.get("SignedHeaders").ok_or("no SignedHeaders")?;
    let names: Vec<&str> = signed_headers.split(';').collect();
    if !names.contains(&"host") || !names.contains(&"x-amz-date") {
        return Err("host and x-amz-date must be signed".into());
    }
    let mut canonical_headers = String::new();
    for name in &names {
        let value = header(name).ok_or(format!("signed header {name} missing"))?;
        let value = value.split_whitespace().collect::<Vec<_>>().join(" ");
        canonical_headers.push_str(&format!("{name}:{value}\n"));
    }
    let mut query: Vec<(String, String)> = req
        .query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (uri_encode(&percent_decode(k)), uri_encode(&percent_decode(v)))
        })
        .collect();
    query.sort();
    let query = query.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&");
    let path =
        req.path.split('/').map(|s| uri_encode(&percent_decode(s))).collect::<Vec<_>>().join("/");
    let canonical = format!(
        "{}\n{path}\n{query}\n{canonical_headers}\n{signed_headers}\n{}",
        req.method,
        sha256_hex(req.body)
    );
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{date}/{region}/{service}/aws4_request\n{}",
        sha256_hex(canonical.as_bytes())
    );
    let k_date = hmac(format!("AWS4{secret}").as_bytes(), date);
    let k_region = hmac(&k_date, region);
    let k_service = hmac(&k_region, service);
    let k_signing = hmac(&k_service, "aws4_request");
    let expected = hex(&hmac(&k_signing, &to_sign));
    let got = fields.get("Signature").ok_or("no Signature")?;
    if *got == expected { Ok(()) } else { Err(format!("signature mismatch for:\n{canonical}")) }
}

/// What the fake Route53 holds and saw.
#[derive(Debug, Default)]
struct State {
    /// (id, name, private).
    zones: Vec<(String, String, bool)>,
    /// TXT sets by (zone id, name): TTL and quoted values.
    records: BTreeMap<(String, String), (u64, Vec<String>)>,
    /// GetChange calls per change id (the first answers PENDING, later ones INSYNC).
    changes: BTreeMap<String, u32>,
    insync_answers: usize,
    /// `METHOD path?query` of every request.
    requests: Vec<String>,
    /// Actions of every accepted change, in order.
    actions: Vec<String>,
    signature_failures: usize,
}

struct FakeRoute53 {
    url: String,
    state: Arc<Mutex<State>>,
}

impl FakeRoute53 {
    async fn start(state: State) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let state = Arc::new(Mutex::new(state));
        let shared = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let state = shared.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(handle(req, &state).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        Self { url, state }
    }

    async fn values(&self, zone: &str, name: &str) -> Vec<String> {
        let state = self.state.lock().await;
        state.records.get(&(zone.into(), name.into())).map(|(_, v)| v.clone()).unwrap_or_default()
    }
}

fn xml(status: u16, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "text/xml")
        .body(Full::new(Bytes::from(body)))
        .expect("response")
}

fn error(status: u16, code: &str, message: &str) -> Response<Full<Bytes>> {
    xml(
        status,
        format!(
            "<?xml version=\"1.0\"?><ErrorResponse xmlns=\"https://route53.amazonaws.com/doc/{API}/\">\
             <Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>\
             <RequestId>test</RequestId></ErrorResponse>"
        ),
    )
}

fn query_param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| percent_decode(v))
}

async fn handle(
    req: Request<hyper::body::Incoming>,
    state: &Mutex<State>,
) -> Response<Full<Bytes>> {
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or_default().to_owned()))
        .collect();
    #[allow(clippy::disallowed_methods, reason = "bounded by Limited")]
    let body = http_body_util::Limited::new(req.into_body(), 1 << 20)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut state = state.lock().await;
    state.requests.push(format!("{method} {path}?{query}"));
    let signed = Signed { method: &method, path: &path, query: &query, headers, body: &body };
    if let Err(why) = verify(&signed, KEY_ID, SECRET, "us-east-1", "route53") {
        state.signature_failures += 1;
        let message =
            "The request signature we calculated does not match the signature you provided.";
        return error(
            403,
            "SignatureDoesNotMatch",
            &format!("{message} ({})", why.lines().next().unwrap_or("")),
        );
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method.as_str(), segments.as_slice()) {
        ("GET", [API, "hostedzonesbyname"]) => {
            let dnsname = query_param(&query, "dnsname").unwrap_or_default();
            let mut zones = state.zones.clone();
            // Route53 lists from the given name on; the exact name (if any) comes first.
            zones.sort_by_key(|(_, name, _)| *name != dnsname);
            let zones: String = zones
                .iter()
                .map(|(id, name, private)| {
                    format!(
                        "<HostedZone><Id>/hostedzone/{id}</Id><Name>{name}</Name>\
                         <CallerReference>x</CallerReference><Config><PrivateZone>{private}</PrivateZone></Config>\
                         <ResourceRecordSetCount>2</ResourceRecordSetCount></HostedZone>"
                    )
                })
                .collect();
            xml(
                200,
                format!(
                    "<?xml version=\"1.0\"?><ListHostedZonesByNameResponse xmlns=\"https://route53.amazonaws.com/doc/{API}/\">\
                     <HostedZones>{zones}</HostedZones><DNSName>{dnsname}</DNSName><IsTruncated>false</IsTruncated>\
                     <MaxItems>10</MaxItems></ListHostedZonesByNameResponse>"
                ),
            )
        }
        ("GET", [API, "hostedzone", zone, "rrset"]) => {
            if !state.zones.iter().any(|(id, _, _)| id == zone) {
                return error(404, "NoSuchHostedZone", "No hosted zone found");
            }
            let name = query_param(&query, "name").unwrap_or_default();
            // From the given name on, like Route53: the next name when it has no set.
            let next = state
                .records
                .range((zone.to_string(), name.clone())..)
                .find(|((z, _), _)| z == zone)
                .map(|((_, n), (ttl, values))| (n.clone(), *ttl, values.clone()));
            let sets = next.map_or(String::new(), |(n, ttl, values)| {
                let values: String = values
                    .iter()
                    .map(|v| {
                        format!(
                            "<ResourceRecord><Value>{}</Value></ResourceRecord>",
                            v.replace('"', "&quot;")
                        )
                    })
                    .collect();
                format!(
                    "<ResourceRecordSet><Name>{n}</Name><Type>TXT</Type><TTL>{ttl}</TTL>\
                     <ResourceRecords>{values}</ResourceRecords></ResourceRecordSet>"
                )
            });
            xml(
                200,
                format!(
                    "<?xml version=\"1.0\"?><ListResourceRecordSetsResponse xmlns=\"https://route53.amazonaws.com/doc/{API}/\">\
                     <ResourceRecordSets>{sets}</ResourceRecordSets><IsTruncated>false</IsTruncated>\
                     <MaxItems>1</MaxItems></ListResourceRecordSetsResponse>"
                ),
            )
        }
        ("POST", [API, "hostedzone", zone, "rrset", ""]) => {
            let zone = zone.to_string();
            let text = String::from_utf8_lossy(&body).into_owned();
            let Ok(doc) = roxmltree::Document::parse(&text) else {
                return error(400, "InvalidInput", "body is not XML");
            };
            let text_of = |node: roxmltree::Node<'_, '_>, name: &str| {
                node.descendants()
                    .find(|n| n.has_tag_name(name))
                    .and_then(|n| n.text())
                    .unwrap_or("")
                    .to_owned()
            };
            let mut records = state.records.clone();
            let mut actions = Vec::new();
            for change in doc.descendants().filter(|n| n.has_tag_name("Change")) {
                let action = text_of(change, "Action");
                let name = text_of(change, "Name");
                if text_of(change, "Type") != "TXT" {
                    return error(400, "InvalidInput", "only TXT here");
                }
                let ttl: u64 = text_of(change, "TTL").parse().unwrap_or(0);
                let values: Vec<String> = change
                    .descendants()
                    .filter(|n| n.has_tag_name("Value"))
                    .filter_map(|n| n.text().map(str::to_owned))
                    .collect();
                let key = (zone.clone(), name.clone());
                match action.as_str() {
                    "UPSERT" => {
                        records.insert(key, (ttl, values));
                    }
                    "CREATE" if records.contains_key(&key) => {
                        return error(
                            400,
                            "InvalidChangeBatch",
                            "Tried to create resource record set but it already exists",
                        );
                    }
                    "CREATE" => {
                        records.insert(key, (ttl, values));
                    }
                    "DELETE" if records.get(&key) == Some(&(ttl, values.clone())) => {
                        records.remove(&key);
                    }
                    "DELETE" => {
                        return error(
                            400,
                            "InvalidChangeBatch",
                            "Tried to delete resource record set but it was not found",
                        );
                    }
                    other => return error(400, "InvalidInput", &format!("action {other}")),
                }
                actions.push(format!("{action} {name}"));
            }
            state.records = records;
            state.actions.extend(actions);
            let id = format!("C{}", state.changes.len() + 1);
            state.changes.insert(id.clone(), 0);
            xml(
                200,
                format!(
                    "<?xml version=\"1.0\"?><ChangeResourceRecordSetsResponse xmlns=\"https://route53.amazonaws.com/doc/{API}/\">\
                     <ChangeInfo><Id>/change/{id}</Id><Status>PENDING</Status><SubmittedAt>2026-11-22T00:00:00Z</SubmittedAt>\
                     </ChangeInfo></ChangeResourceRecordSetsResponse>"
                ),
            )
        }
        ("GET", [API, "change", id]) => {
            let Some(polls) = state.changes.get_mut(*id) else {
                return error(404, "NoSuchChange", "no such change");
            };
            *polls += 1;
            let status = if *polls > 1 { "INSYNC" } else { "PENDING" };
            if status == "INSYNC" {
                state.insync_answers += 1;
            }
            xml(
                200,
                format!(
                    "<?xml version=\"1.0\"?><GetChangeResponse xmlns=\"https://route53.amazonaws.com/doc/{API}/\">\
                     <ChangeInfo><Id>/change/{id}</Id><Status>{status}</Status><SubmittedAt>2026-11-22T00:00:00Z</SubmittedAt>\
                     </ChangeInfo></GetChangeResponse>"
                ),
            )
        }
        _ => error(400, "InvalidInput", &format!("{method} {path} is not served")),
    }
}

fn credentials(dir: &tempfile::TempDir, secret: &str) -> std::path::PathBuf {
    let path = dir.path().join("credentials");
    std::fs::write(
        &path,
        format!("[default]\naws_access_key_id = WRONG\naws_secret_access_key = wrong\n\n[dns]\naws_access_key_id = {KEY_ID}\naws_secret_access_key = {secret}\n"),
    )
    .expect("credentials file");
    path
}

fn provider(url: &str, file: std::path::PathBuf, zone: Option<&str>) -> Route53Provider {
    Route53Provider::new(&Route53 {
        hosted_zone_id: zone.map(str::to_owned),
        profile: Some("dns".into()),
        credentials_file: Some(file),
        region: "us-east-1".into(),
        api_url: url.into(),
    })
    .expect("provider")
}

fn zones() -> State {
    let mut state = State {
        zones: vec![
            ("ZPRIVATE".into(), "example.com.".into(), true),
            ("ZPUBLIC".into(), "example.com.".into(), false),
            ("ZOTHER".into(), "example.org.".into(), false),
        ],
        ..State::default()
    };
    // Someone else's value at the name our two records share.
    state.records.insert(
        ("ZPUBLIC".into(), "_acme-challenge.example.com.".into()),
        (300, vec!["\"theirs\"".into()]),
    );
    // A later name, which a lookup of a missing set must not take for it.
    state.records.insert(
        ("ZPUBLIC".into(), "_acme-challenge.zzz.example.com.".into()),
        (60, vec!["\"zzz\"".into()]),
    );
    state
}

fn record(fqdn: &str, value: &str) -> TxtRecord {
    TxtRecord { fqdn: fqdn.into(), value: value.into() }
}

#[test]
fn the_independent_verifier_accepts_the_aws_get_vanilla_vector() {
    // AWS SigV4 test suite, get-vanilla.
    let headers = vec![
        ("Host".to_owned(), "example.amazonaws.com".to_owned()),
        ("X-Amz-Date".to_owned(), "20150830T123600Z".to_owned()),
        (
            "Authorization".to_owned(),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
                .to_owned(),
        ),
    ];
    let secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    let req = Signed { method: "GET", path: "/", query: "", headers, body: b"" };
    verify(&req, "AKIDEXAMPLE", secret, "us-east-1", "service").expect("the published vector");
    // One byte of difference anywhere fails it.
    let tampered = Signed { method: "GET", path: "/x", ..req };
    assert!(verify(&tampered, "AKIDEXAMPLE", secret, "us-east-1", "service").is_err());
    let req = Signed { method: "GET", path: "/", query: "", headers: tampered.headers, body: b"" };
    assert!(verify(&req, "AKIDEXAMPLE", "wrong", "us-east-1", "service").is_err());
}

#[tokio::test]
async fn route53_adds_beside_other_values_waits_for_insync_and_removes_only_its_own() {
    let server = FakeRoute53::start(zones()).await;
    let dir = tempfile::tempdir().expect("dir");
    let route53 = provider(&server.url, credentials(&dir, SECRET), None);
    let shared = "_acme-challenge.example.com.";
    let (base, wildcard) = (record(shared, "base-token"), record(shared, "wildcard-token"));

    route53.present(&base).await.expect("present");
    route53.present(&wildcard).await.expect("present the second value");
    assert_eq!(
        server.values("ZPUBLIC", shared).await,
        ["\"theirs\"", "\"base-token\"", "\"wildcard-token\""]
    );
    // Presenting the same value again changes nothing.
    route53.present(&base).await.expect("present again");
    {
        let state = server.state.lock().await;
        assert_eq!(state.signature_failures, 0, "{:#?}", state.requests);
        // Each present returned only after Route53 said INSYNC (PENDING first).
        assert_eq!(state.insync_answers, 2, "{:#?}", state.requests);
        assert_eq!(state.actions, [format!("UPSERT {shared}"), format!("UPSERT {shared}")]);
        // The public zone of that name was found by name, never the private one.
        assert!(
            state.requests.iter().any(|r| r.contains("hostedzonesbyname?dnsname=example.com."))
        );
        assert!(state.requests.iter().all(|r| !r.contains("ZPRIVATE")), "{:#?}", state.requests);
        // The existing TTL is kept.
        assert_eq!(state.records[&("ZPUBLIC".to_owned(), shared.to_owned())].0, 300);
    }

    route53.cleanup(&base).await.expect("cleanup");
    assert_eq!(server.values("ZPUBLIC", shared).await, ["\"theirs\"", "\"wildcard-token\""]);
    route53.cleanup(&wildcard).await.expect("cleanup");
    route53.cleanup(&wildcard).await.expect("cleanup of a value already gone");
    assert_eq!(server.values("ZPUBLIC", shared).await, ["\"theirs\""]);

    // A name with no set yet: created, then deleted whole (a DELETE names it exactly).
    let www = record("_acme-challenge.www.example.com.", "www-token");
    route53.present(&www).await.expect("present");
    assert_eq!(server.values("ZPUBLIC", &www.fqdn).await, ["\"www-token\""]);
    route53.cleanup(&www).await.expect("cleanup");
    let state = server.state.lock().await;
    assert!(!state.records.contains_key(&("ZPUBLIC".to_owned(), www.fqdn.clone())));
    assert_eq!(
        state.actions.last().map(String::as_str),
        Some("DELETE _acme-challenge.www.example.com.")
    );
    // The later name that a lookup of the missing set returned was left alone.
    assert_eq!(
        state.records[&("ZPUBLIC".to_owned(), "_acme-challenge.zzz.example.com.".to_owned())].1,
        ["\"zzz\""]
    );
    assert_eq!(state.signature_failures, 0);
}

#[tokio::test]
async fn a_wrong_secret_fails_the_signature_check_and_writes_nothing() {
    let server = FakeRoute53::start(zones()).await;
    let dir = tempfile::tempdir().expect("dir");
    let route53 = provider(&server.url, credentials(&dir, "not-the-secret"), Some("ZPUBLIC"));
    let err = route53
        .present(&record("_acme-challenge.www.example.com.", "v"))
        .await
        .expect_err("rejected");
    let message = err.to_string();
    assert!(message.contains("route53") && message.contains("SignatureDoesNotMatch"), "{message}");
    let state = server.state.lock().await;
    assert!(state.signature_failures > 0);
    assert!(state.actions.is_empty());
}

#[tokio::test]
async fn a_configured_zone_is_used_without_a_lookup_and_a_missing_profile_is_clear() {
    let server = FakeRoute53::start(zones()).await;
    let dir = tempfile::tempdir().expect("dir");
    let route53 = provider(&server.url, credentials(&dir, SECRET), Some("/hostedzone/ZPUBLIC"));
    let www = record("_acme-challenge.www.example.com.", "www-token");
    route53.present(&www).await.expect("present");
    route53.cleanup(&www).await.expect("cleanup");
    let requests = server.state.lock().await.requests.clone();
    assert!(requests.iter().all(|r| !r.contains("hostedzonesbyname")), "{requests:#?}");

    let missing = Route53Provider::new(&Route53 {
        hosted_zone_id: Some("ZPUBLIC".into()),
        profile: Some("nobody".into()),
        credentials_file: Some(dir.path().join("credentials")),
        region: "us-east-1".into(),
        api_url: server.url.clone(),
    })
    .expect("provider");
    let err = missing.present(&www).await.expect_err("no such profile");
    assert!(err.to_string().contains("no profile [nobody]"), "{err}");
}
