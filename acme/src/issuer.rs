//! One issuer: its account, and orders run from new-order to certificate with every
//! challenge record removed again, whatever happens in between.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use gatehouse_model::acme::AcmeIssuer;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, ExternalAccountKey,
    Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde::Serialize;
use tokio::sync::{Mutex, watch};

use crate::cert::leaf_info;
use crate::dns::{self, DnsProvider, PropagationCheck, TxtRecord, challenge_name};
use crate::error::AcmeError;
use crate::http::CaClient;
use crate::store::{CertMeta, Store, StoredCert};

/// What an invalid order without any challenge error is reported as.
const NO_REASON: &str = "the CA marked the order invalid";

/// Whole orders tried when the CA keeps rejecting nonces (instant-acme retries a request 3×).
const NONCE_ATTEMPTS: u32 = 8;
/// How long the CA may take to validate, and then to issue.
const CA_TIMEOUT: Duration = Duration::from_secs(90);

/// How long each phase of one issuance took.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Phases {
    pub account: Duration,
    pub order: Duration,
    pub dns_publish: Duration,
    pub propagation: Duration,
    pub validation: Duration,
    pub finalize: Duration,
}

impl Phases {
    /// Sum of all phases.
    pub fn total(&self) -> Duration {
        self.account
            + self.order
            + self.dns_publish
            + self.propagation
            + self.validation
            + self.finalize
    }
}

/// A certificate just issued (already stored) and how long it took.
#[derive(Clone, Debug)]
pub struct Issued {
    pub cert: StoredCert,
    pub phases: Phases,
    /// Orders started, more than one when badNonce forced a retry.
    pub attempts: u32,
}

/// An ACME issuer ready to order certificates.
pub struct Issuer {
    spec: AcmeIssuer,
    dns: Arc<dyn DnsProvider>,
    propagation: PropagationCheck,
    store: Store,
    roots: RootCertStore,
    retry_after: Arc<watch::Sender<Option<SystemTime>>>,
    account: Mutex<Option<Account>>,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("name", &self.spec.name)
            .field("directory_url", &self.spec.directory_url)
            .field("dns", &self.dns)
            .finish_non_exhaustive()
    }
}

impl Issuer {
    /// Checks the settings and builds the DNS provider; talks to nobody yet.
    pub fn new(spec: &AcmeIssuer, store: Store) -> Result<Self, AcmeError> {
        let roots = crate::http::roots(spec.ca_roots.as_deref()).map_err(AcmeError::Settings)?;
        if let Some(eab) = &spec.eab {
            URL_SAFE_NO_PAD
                .decode(eab.hmac_key.expose().trim_end_matches('='))
                .map_err(|e| AcmeError::Settings(format!("eab.hmac_key is not base64url: {e}")))?;
        }
        Ok(Self {
            spec: spec.clone(),
            dns: dns::provider(&spec.dns)?,
            propagation: PropagationCheck::new(&spec.propagation),
            store,
            roots,
            retry_after: Arc::new(watch::Sender::new(None)),
            account: Mutex::new(None),
        })
    }

    /// The issuer's settings.
    pub fn spec(&self) -> &AcmeIssuer {
        &self.spec
    }

    /// Removes challenge records a previous run published and never removed (a crash or a
    /// restart mid-order).
    pub async fn clean_pending(&self) -> Result<(), AcmeError> {
        let pending = self.store.pending(&self.spec.name)?;
        if pending.is_empty() {
            return Ok(());
        }
        let left = self.cleanup(&pending).await;
        self.store.save_pending(&self.spec.name, &left)?;
        match left.first() {
            None => Ok(()),
            Some(r) => Err(AcmeError::Dns(dns::DnsError::Provider {
                provider: self.dns.name(),
                message: format!("could not remove left-over record {}", r.fqdn),
            })),
        }
    }

    /// Orders a certificate for `names` (the first is the common name), stores it and returns
    /// it. A whole order is retried when the CA keeps rejecting nonces.
    pub async fn issue(&self, names: &[String]) -> Result<Issued, AcmeError> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let mut phases = Phases::default();
            match self.issue_once(names, &mut phases).await {
                Ok(cert) => {
                    return Ok(Issued { cert, phases, attempts });
                }
                Err(AcmeError::BadNonce { detail, .. }) => {
                    if attempts >= NONCE_ATTEMPTS {
                        return Err(AcmeError::BadNonce { attempts, detail });
                    }
                    tracing::debug!(issuer = %self.spec.name, attempts, "badNonce: retrying the order");
                }
                Err(AcmeError::Ca { detail, .. })
                    if detail.contains("accountDoesNotExist") && attempts < NONCE_ATTEMPTS =>
                {
                    // The CA forgot the account (a test CA restarted): make a new one.
                    tracing::info!(issuer = %self.spec.name, "account unknown to the CA: registering again");
                    *self.account.lock().await = None;
                    self.store.save_account(&self.spec.name, "")?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The CA's suggested renewal window (RFC 9773) for a certificate, if the CA offers ARI.
    pub async fn renewal_window(&self, cert: &StoredCert) -> Option<(SystemTime, SystemTime)> {
        let leaf = CertificateDer::pem_slice_iter(cert.chain_pem.as_bytes()).next()?.ok()?;
        let id = instant_acme::CertificateIdentifier::try_from(&leaf).ok()?;
        let mut phases = Phases::default();
        let account = self.account(&mut phases).await.ok()?;
        let (info, _) = account.renewal_info(&id).await.ok()?;
        let at = |t: time::OffsetDateTime| {
            SystemTime::UNIX_EPOCH
                + Duration::from_secs(u64::try_from(t.unix_timestamp()).unwrap_or_default())
        };
        Some((at(info.suggested_window.start), at(info.suggested_window.end)))
    }

    fn acme_err(&self, e: instant_acme::Error) -> AcmeError {
        AcmeError::from_acme(e, *self.retry_after.borrow())
    }

    async fn account(&self, phases: &mut Phases) -> Result<Account, AcmeError> {
        let mut slot = self.account.lock().await;
        if let Some(account) = slot.as_ref() {
            return Ok(account.clone());
        }
        let started = Instant::now();
        let client = || Box::new(CaClient::new(self.roots.clone(), self.retry_after.clone()));
        let stored = self
            .store
            .account(&self.spec.name)?
            .filter(|json| !json.trim().is_empty())
            .and_then(|json| serde_json::from_str::<AccountCredentials>(&json).ok());
        let account = match stored {
            Some(credentials) => Account::builder_with_http(client())
                .from_credentials(credentials)
                .await
                .map_err(|e| self.acme_err(e))?,
            None => {
                let contact: Vec<&str> = self.spec.contact.iter().map(String::as_str).collect();
                let eab = match &self.spec.eab {
                    Some(eab) => Some(ExternalAccountKey::new(
                        eab.key_id.clone(),
                        &URL_SAFE_NO_PAD
                            .decode(eab.hmac_key.expose().trim_end_matches('='))
                            .map_err(|e| AcmeError::Settings(e.to_string()))?,
                    )),
                    None => None,
                };
                let (account, credentials) = Account::builder_with_http(client())
                    .create(
                        &NewAccount {
                            contact: &contact,
                            terms_of_service_agreed: true,
                            only_return_existing: false,
                        },
                        self.spec.directory_url.clone(),
                        eab.as_ref(),
                    )
                    .await
                    .map_err(|e| self.acme_err(e))?;
                let json = serde_json::to_string(&credentials)
                    .map_err(|e| AcmeError::Settings(e.to_string()))?;
                self.store.save_account(&self.spec.name, &json)?;
                account
            }
        };
        phases.account = started.elapsed();
        *slot = Some(account.clone());
        Ok(account)
    }

    async fn issue_once(
        &self,
        names: &[String],
        phases: &mut Phases,
    ) -> Result<StoredCert, AcmeError> {
        self.retry_after.send_replace(None);
        let account = self.account(phases).await?;
        let started = Instant::now();
        let identifiers: Vec<Identifier> =
            names.iter().map(|n| Identifier::Dns(n.clone())).collect();
        let mut order =
            account.new_order(&NewOrder::new(&identifiers)).await.map_err(|e| self.acme_err(e))?;

        // Collect the challenges first (authorizations are fetched once and cached).
        let mut records = Vec::new();
        {
            let mut authorizations = order.authorizations();
            while let Some(authz) = authorizations.next().await {
                let mut authz = authz.map_err(|e| self.acme_err(e))?;
                match authz.status {
                    AuthorizationStatus::Valid => continue,
                    AuthorizationStatus::Pending => {}
                    other => {
                        return Err(AcmeError::OrderInvalid(format!(
                            "authorization for {} is {other:?}",
                            authz.identifier()
                        )));
                    }
                }
                let identifier = authz.identifier().to_string();
                let challenge = authz.challenge(ChallengeType::Dns01).ok_or_else(|| {
                    AcmeError::OrderInvalid(format!(
                        "CA offers no dns-01 challenge for {identifier}"
                    ))
                })?;
                records.push(TxtRecord {
                    fqdn: challenge_name(&identifier),
                    value: challenge.key_authorization().dns_value(),
                });
            }
        }
        phases.order = started.elapsed();

        let mut published = Vec::new();
        let result = self.validate_and_finalize(&mut order, &records, &mut published, phases).await;
        let left = self.cleanup(&published).await;
        self.store.save_pending(&self.spec.name, &left)?;
        let key_pem = result?;
        self.finish(names, order, key_pem, phases).await
    }

    /// Publishes, waits for propagation, asks for validation and finalizes. Every record that
    /// reached the provider is in `published` when this returns, success or not.
    async fn validate_and_finalize(
        &self,
        order: &mut instant_acme::Order,
        records: &[TxtRecord],
        published: &mut Vec<TxtRecord>,
        phases: &mut Phases,
    ) -> Result<String, AcmeError> {
        let started = Instant::now();
        let mut targets = Vec::new();
        for record in records {
            let target = TxtRecord {
                fqdn: self.propagation.target(&record.fqdn).await?,
                value: record.value.clone(),
            };
            // Noted before the call: a crash mid-call still leaves a record to remove.
            let mut pending = published.clone();
            pending.push(target.clone());
            self.store.save_pending(&self.spec.name, &pending)?;
            published.push(target.clone());
            if let Err(e) = self.dns.present(&target).await {
                // A refusal means nothing was written; a lost answer may hide a write.
                if e.nothing_written() {
                    published.pop();
                }
                return Err(e.into());
            }
            targets.push(target);
        }
        phases.dns_publish = started.elapsed();

        let started = Instant::now();
        self.propagation.wait(&targets).await?;
        phases.propagation = started.elapsed();

        let started = Instant::now();
        {
            let mut authorizations = order.authorizations();
            while let Some(authz) = authorizations.next().await {
                let mut authz = authz.map_err(|e| self.acme_err(e))?;
                if authz.status != AuthorizationStatus::Pending {
                    continue;
                }
                if let Some(mut challenge) = authz.challenge(ChallengeType::Dns01) {
                    challenge.set_ready().await.map_err(|e| self.acme_err(e))?;
                }
            }
        }
        let policy = RetryPolicy::new()
            .initial_delay(Duration::from_millis(100))
            .backoff(1.5)
            .timeout(CA_TIMEOUT);
        let status = match order.poll_ready(&policy).await {
            Ok(status) => status,
            Err(instant_acme::Error::Timeout(_)) => return Err(AcmeError::Timeout(CA_TIMEOUT)),
            // An invalid order's own `error` comes back as a CA problem too: tell it apart by
            // the order's state, so a failed validation reads as such and not as a CA fault.
            Err(e) if order.state().status == OrderStatus::Invalid => {
                let why = self.why_invalid(order).await;
                let why = if why == NO_REASON { e.to_string() } else { why };
                return Err(AcmeError::OrderInvalid(why));
            }
            Err(e) => return Err(self.acme_err(e)),
        };
        if status != OrderStatus::Ready {
            return Err(AcmeError::OrderInvalid(self.why_invalid(order).await));
        }
        phases.validation = started.elapsed();

        let started = Instant::now();
        let key_pem = order.finalize().await.map_err(|e| self.acme_err(e))?;
        phases.finalize = started.elapsed();
        Ok(key_pem)
    }

    async fn finish(
        &self,
        names: &[String],
        mut order: instant_acme::Order,
        key_pem: String,
        phases: &mut Phases,
    ) -> Result<StoredCert, AcmeError> {
        let started = Instant::now();
        let policy = RetryPolicy::new()
            .initial_delay(Duration::from_millis(100))
            .backoff(1.5)
            .timeout(CA_TIMEOUT);
        let chain_pem = order.poll_certificate(&policy).await.map_err(|e| match e {
            instant_acme::Error::Timeout(_) => AcmeError::Timeout(CA_TIMEOUT),
            e => self.acme_err(e),
        })?;
        let info = leaf_info(&chain_pem).map_err(AcmeError::Certificate)?;
        gatehouse_model::certified_key(chain_pem.as_bytes(), key_pem.as_bytes())
            .map_err(|e| AcmeError::Certificate(e.to_string()))?;
        let cert = StoredCert {
            chain_pem,
            key_pem,
            meta: CertMeta {
                issuer: self.spec.name.clone(),
                names: names.to_vec(),
                not_before: info.not_before,
                not_after: info.not_after,
                issued_at: SystemTime::now(),
            },
        };
        self.store.save_cert(&cert)?;
        phases.finalize += started.elapsed();
        Ok(cert)
    }

    /// The CA's reasons for an invalid order, from its challenges ([`NO_REASON`] if none).
    async fn why_invalid(&self, order: &mut instant_acme::Order) -> String {
        let mut reasons = Vec::new();
        let mut authorizations = order.authorizations();
        while let Some(Ok(mut authz)) = authorizations.next().await {
            let Ok(state) = authz.refresh().await else {
                continue;
            };
            for challenge in &state.challenges {
                if let Some(problem) = &challenge.error {
                    reasons.push(format!("{}: {problem}", state.identifier()));
                }
            }
        }
        if reasons.is_empty() { NO_REASON.into() } else { reasons.join("; ") }
    }

    /// Removes records; returns those that could not be removed.
    async fn cleanup(&self, records: &[TxtRecord]) -> Vec<TxtRecord> {
        let mut left = Vec::new();
        for record in records {
            if let Err(e) = self.dns.cleanup(record).await {
                tracing::warn!(issuer = %self.spec.name, record = %record.fqdn, error = %e, "challenge record not removed");
                left.push(record.clone());
            }
        }
        left
    }
}
