//! Everything ACME keeps across restarts, under `<state_dir>/acme/`: account credentials per
//! issuer, issued certificates with their metadata, and challenge records still to remove.
//!
//! Every write is atomic (temporary file in the same directory, fsync, rename, fsync of the
//! directory) so a crash leaves the old or the new file, never half of one. Secrets are 0600.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::dns::TxtRecord;

/// Why the state directory could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct StoreError {
    pub path: PathBuf,
    pub message: String,
}

impl StoreError {
    fn at(path: &Path, err: impl std::fmt::Display) -> Self {
        Self { path: path.to_owned(), message: err.to_string() }
    }
}

/// Metadata kept beside a certificate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CertMeta {
    pub issuer: String,
    pub names: Vec<String>,
    #[serde(with = "unix_seconds")]
    pub not_before: SystemTime,
    #[serde(with = "unix_seconds")]
    pub not_after: SystemTime,
    #[serde(with = "unix_seconds")]
    pub issued_at: SystemTime,
}

/// A certificate as stored: PEM chain, PEM key and metadata.
#[derive(Clone, PartialEq)]
pub struct StoredCert {
    pub chain_pem: String,
    pub key_pem: String,
    pub meta: CertMeta,
}

impl std::fmt::Debug for StoredCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredCert").field("meta", &self.meta).finish_non_exhaustive()
    }
}

/// The `acme/` part of the state directory.
#[derive(Clone, Debug)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// A store under `<state_dir>/acme`; directories are created on first write.
    pub fn new(state_dir: &Path) -> Self {
        Self { root: state_dir.join("acme") }
    }

    /// The directory everything lives under.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The stored account credentials (instant-acme's JSON) of an issuer, if any.
    pub fn account(&self, issuer: &str) -> Result<Option<String>, StoreError> {
        read_optional(&self.account_path(issuer))
    }

    /// Keeps an issuer's account credentials (0600).
    pub fn save_account(&self, issuer: &str, json: &str) -> Result<(), StoreError> {
        write_atomic(&self.account_path(issuer), json.as_bytes(), 0o600)
    }

    /// The stored certificate for `names`, if any.
    pub fn cert(&self, names: &[String]) -> Result<Option<StoredCert>, StoreError> {
        let dir = self.cert_dir(names);
        let (Some(chain_pem), Some(key_pem), Some(meta)) = (
            read_optional(&dir.join("cert.pem"))?,
            read_optional(&dir.join("key.pem"))?,
            read_optional(&dir.join("meta.json"))?,
        ) else {
            return Ok(None);
        };
        let meta_path = dir.join("meta.json");
        let meta = serde_json::from_str(&meta).map_err(|e| StoreError::at(&meta_path, e))?;
        Ok(Some(StoredCert { chain_pem, key_pem, meta }))
    }

    /// Keeps a certificate: key first, then chain, then metadata (which makes it visible).
    pub fn save_cert(&self, cert: &StoredCert) -> Result<(), StoreError> {
        let dir = self.cert_dir(&cert.meta.names);
        write_atomic(&dir.join("key.pem"), cert.key_pem.as_bytes(), 0o600)?;
        write_atomic(&dir.join("cert.pem"), cert.chain_pem.as_bytes(), 0o644)?;
        let meta = serde_json::to_vec_pretty(&cert.meta).map_err(|e| StoreError::at(&dir, e))?;
        write_atomic(&dir.join("meta.json"), &meta, 0o644)
    }

    /// Every stored certificate (for `gatehouse certs`); unreadable entries are skipped.
    pub fn certs(&self) -> Result<Vec<StoredCert>, StoreError> {
        let dir = self.root.join("certs");
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(StoreError::at(&dir, e)),
        };
        let mut certs = Vec::new();
        for entry in entries.flatten() {
            let meta_path = entry.path().join("meta.json");
            let Some(meta) = read_optional(&meta_path)? else {
                continue;
            };
            let Ok(meta) = serde_json::from_str::<CertMeta>(&meta) else {
                continue;
            };
            if let Some(cert) = self.cert(&meta.names)? {
                certs.push(cert);
            }
        }
        certs.sort_by(|a, b| a.meta.names.cmp(&b.meta.names));
        Ok(certs)
    }

    /// Challenge records of an issuer that were published and not yet removed.
    pub fn pending(&self, issuer: &str) -> Result<Vec<TxtRecord>, StoreError> {
        let path = self.pending_path(issuer);
        match read_optional(&path)? {
            None => Ok(Vec::new()),
            Some(json) => serde_json::from_str(&json).map_err(|e| StoreError::at(&path, e)),
        }
    }

    /// Replaces the list of records still to remove.
    pub fn save_pending(&self, issuer: &str, records: &[TxtRecord]) -> Result<(), StoreError> {
        let path = self.pending_path(issuer);
        if records.is_empty() {
            return match fs::remove_file(&path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(StoreError::at(&path, e)),
            };
        }
        let json = serde_json::to_vec(records).map_err(|e| StoreError::at(&path, e))?;
        write_atomic(&path, &json, 0o600)
    }

    fn account_path(&self, issuer: &str) -> PathBuf {
        self.root.join("accounts").join(format!("{}.json", file_name(issuer)))
    }

    fn pending_path(&self, issuer: &str) -> PathBuf {
        self.root.join("pending").join(format!("{}.json", file_name(issuer)))
    }

    fn cert_dir(&self, names: &[String]) -> PathBuf {
        self.root.join("certs").join(cert_dir_name(names))
    }
}

/// A directory name for a set of names: `*.` becomes `_.`, names joined by `+`.
pub(crate) fn cert_dir_name(names: &[String]) -> String {
    let joined =
        names.iter().map(|n| file_name(&n.replace('*', "_"))).collect::<Vec<_>>().join("+");
    if joined.len() <= 200 {
        return joined;
    }
    // Long SAN lists: keep a readable prefix and make the rest unique by a stable checksum.
    let sum = joined
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    let prefix: String = joined.chars().take(180).collect();
    format!("{prefix}-{sum:016x}")
}

/// Keeps `[A-Za-z0-9._+-]`, replaces the rest, never yields `.` or `..`.
fn file_name(raw: &str) -> String {
    let cleaned: String = raw
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '_' | '-' => c,
            _ => '_',
        })
        .collect();
    if cleaned.chars().all(|c| c == '.') { format!("_{cleaned}") } else { cleaned }
}

fn read_optional(path: &Path) -> Result<Option<String>, StoreError> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::at(path, e)),
    }
}

/// Writes `bytes` to `path` atomically with `mode`, creating the directory (0700) if needed.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), StoreError> {
    let dir = path.parent().ok_or_else(|| StoreError::at(path, "no parent directory"))?;
    fs::create_dir_all(dir).map_err(|e| StoreError::at(dir, e))?;
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| StoreError::at(path, "no file name"))?;
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let result = (|| {
        let mut file =
            fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&tmp)?;
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(StoreError::at(path, e));
    }
    Ok(())
}

mod unix_seconds {
    use std::time::{Duration, SystemTime};

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        let secs = t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        s.serialize_u64(secs)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        Ok(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn meta(names: &[&str]) -> CertMeta {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        CertMeta {
            issuer: "pebble".into(),
            names: names.iter().map(|s| s.to_string()).collect(),
            not_before: t,
            not_after: t + Duration::from_secs(90 * 86_400),
            issued_at: t,
        }
    }

    #[test]
    fn account_is_kept_private_and_round_trips() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(dir.path());
        assert_eq!(store.account("le").expect("read"), None);
        store.save_account("le", "{\"id\":1}").expect("write");
        assert_eq!(store.account("le").expect("read").as_deref(), Some("{\"id\":1}"));
        let path = dir.path().join("acme/accounts/le.json");
        let mode = fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // No temporary file is left behind.
        let left: Vec<_> = fs::read_dir(path.parent().expect("dir"))
            .expect("ls")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left.len(), 1, "{left:?}");
    }

    #[test]
    fn certificates_round_trip_with_a_private_key_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(dir.path());
        let cert = StoredCert {
            chain_pem: "CHAIN".into(),
            key_pem: "KEY".into(),
            meta: meta(&["www.example.test", "*.example.test"]),
        };
        store.save_cert(&cert).expect("save");
        let names = cert.meta.names.clone();
        assert_eq!(store.cert(&names).expect("read"), Some(cert.clone()));
        assert_eq!(store.certs().expect("list"), vec![cert]);
        let key = dir.path().join("acme/certs/www.example.test+_.example.test/key.pem");
        let mode = fs::metadata(key).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn hostile_names_stay_inside_the_store() {
        assert_eq!(file_name("../../etc/passwd"), ".._.._etc_passwd");
        assert_eq!(file_name(".."), "_..");
        let long: Vec<String> = (0..40).map(|i| format!("host{i}.example.test")).collect();
        let name = cert_dir_name(&long);
        assert!(name.len() < 220, "{}", name.len());
        assert_ne!(name, cert_dir_name(&long[1..]));
    }

    #[test]
    fn pending_records_are_listed_until_cleared() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(dir.path());
        let rec = TxtRecord { fqdn: "_acme-challenge.example.test.".into(), value: "abc".into() };
        store.save_pending("x", std::slice::from_ref(&rec)).expect("save");
        assert_eq!(store.pending("x").expect("read"), vec![rec]);
        store.save_pending("x", &[]).expect("clear");
        assert!(store.pending("x").expect("read").is_empty());
    }
}
