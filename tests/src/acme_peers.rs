//! Real ACME peers on loopback for tests: Debian's `named` (bind9) serving `example.test` with
//! a TSIG key allowed to update `_acme-challenge` names, and Debian's `pebble` ACME test CA
//! validating DNS-01 against that server. Both run as children of the test, in a temporary
//! directory, and are killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use rcgen::{CertificateParams, KeyPair, SanType};

use crate::TestCa;

/// How long a peer may take to come up.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Whether `named` and `pebble` are installed (`make setup` installs them).
pub fn acme_peers_installed() -> bool {
    Path::new("/usr/sbin/named").exists() && Path::new("/usr/bin/pebble").exists()
}

/// Polls `log` until it contains `needle`, or panics after `START_TIMEOUT` with the log.
fn wait_for_log(log: &Path, needle: &str, child: &mut Child, what: &str) {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(needle) {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited ({status}) before it was ready:\n{text}");
        }
        assert!(Instant::now() < deadline, "{what} not ready in {START_TIMEOUT:?}:\n{text}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A UDP+TCP port on 127.0.0.1 that was free a moment ago.
fn free_dns_port() -> u16 {
    loop {
        let port = crate::free_port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// `named` serving `example.test` on a loopback port.
#[derive(Debug)]
pub struct Bind9 {
    pub port: u16,
    /// TSIG key name, algorithm hmac-sha256.
    pub key_name: String,
    /// Base64 TSIG secret.
    pub secret: String,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Bind9 {
    /// Starts `named` in the foreground with a zone `example.test` (SOA, NS, `www` A) that lets
    /// the key update TXT records at `_acme-challenge.<n>` for each of `names` (one rule per
    /// name, as BIND wants). `extra_zone_lines` are appended to the zone file.
    pub fn start(names: &[&str], extra_zone_lines: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_dns_port();
        let secret = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>());
        let key_name = "gatehouse-acme".to_owned();
        let d = dir.path().display();
        let grants: String = names
            .iter()
            .map(|n| format!("    grant {key_name} name _acme-challenge.{n}. TXT;\n"))
            .collect();
        let conf = format!(
            r#"options {{
  directory "{d}";
  pid-file "{d}/named.pid";
  session-keyfile "{d}/session.key";
  managed-keys-directory "{d}";
  listen-on port {port} {{ 127.0.0.1; }};
  listen-on-v6 {{ none; }};
  recursion no;
  dnssec-validation no;
  notify no;
  allow-query {{ any; }};
}};
controls {{ }};
key "{key_name}" {{ algorithm hmac-sha256; secret "{secret}"; }};
zone "example.test" {{
  type primary;
  file "{d}/example.test.zone";
  update-policy {{
{grants}  }};
}};
"#
        );
        let zone = format!(
            "$TTL 60\n@ IN SOA ns.example.test. hostmaster.example.test. 1 60 60 600 60\n\
             @ IN NS ns.example.test.\nns IN A 127.0.0.1\nwww IN A 127.0.0.1\n{extra_zone_lines}\n"
        );
        std::fs::write(dir.path().join("named.conf"), conf).expect("named.conf");
        std::fs::write(dir.path().join("example.test.zone"), zone).expect("zone");
        let mut bind = Self { port, key_name, secret, dir, child: None };
        bind.spawn();
        bind
    }

    fn spawn(&mut self) {
        let log_path = self.dir.path().join("named.log");
        let log = std::fs::File::create(&log_path).expect("log");
        let mut child = Command::new("/usr/sbin/named")
            .args(["-g", "-4", "-n", "1", "-c"])
            .arg(self.dir.path().join("named.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn named (apt-get install bind9)");
        wait_for_log(&log_path, "running", &mut child, "named");
        self.child = Some(child);
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stops the server (the port stays reserved for [`Bind9::restart`]).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port with the same zone.
    pub fn restart(&mut self) {
        self.stop();
        // The log is replaced so readiness is judged on the new run.
        self.spawn();
    }

    /// The TXT values the server answers for `name` now (asked with `dig`).
    pub fn txt_values(&self, name: &str) -> Vec<String> {
        let out = Command::new("/usr/bin/dig")
            .args(["+short", "+norecurse", "-p", &self.port.to_string(), "@127.0.0.1", name, "TXT"])
            .output()
            .expect("run dig (apt-get install bind9-dnsutils)");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.trim().trim_matches('"').to_owned())
            .filter(|l| !l.is_empty())
            .collect()
    }
}

impl Drop for Bind9 {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The `[[acme.issuers]]` entry named `pebble` that tests and benchmarks use: `pebble` as the
/// CA, `bind` (zone `example.test`) updated with TSIG `secret`, propagation checked on `bind`
/// every `interval_ms`.
pub fn pebble_issuer_toml(pebble: &Pebble, bind: &Bind9, secret: &str, interval_ms: u64) -> String {
    format!(
        r#"[[acme.issuers]]
name = "pebble"
directory_url = "{directory}"
contact = ["mailto:ops@example.test"]
ca_roots = "{ca_roots}"
dns = {{ provider = "rfc2136", server = "{dns}", zone = "example.test", key_name = "{key}", secret = "{secret}" }}
propagation = {{ timeout_seconds = 10, interval_ms = {interval_ms}, resolvers = ["{dns}"] }}
"#,
        directory = pebble.directory_url(),
        ca_roots = pebble.https_ca_path.display(),
        dns = bind.addr(),
        key = bind.key_name,
    )
}

/// Debian's `pebble` on loopback with its own HTTPS certificate, validating DNS-01 against a
/// given DNS server.
#[derive(Debug)]
pub struct Pebble {
    pub port: u16,
    pub management_port: u16,
    /// PEM of the CA that signed pebble's own HTTPS certificate (trust it to talk ACME).
    pub https_ca_pem: String,
    /// That PEM as a file, for `ca_roots`.
    pub https_ca_path: PathBuf,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

/// How pebble should behave; the default rejects no nonce and keeps pebble's lifetime.
#[derive(Clone, Debug, Default)]
pub struct PebbleOptions {
    /// Percentage of good nonces rejected with badNonce (pebble alone would reject 5).
    pub nonce_reject_percent: u32,
    /// Certificate lifetime in seconds (pebble's default is 5 years).
    pub validity_seconds: Option<u64>,
}

impl Pebble {
    /// Starts pebble: ACME and management on 127.0.0.1, `-dnsserver` = `dns_server`.
    ///
    /// Pebble logs its directory before it binds, and exits if a port is taken meanwhile (the
    /// ports here were free a moment ago, another test may have taken one since): it is ready
    /// when both its ports accept connections, and started again on new ports if it exited.
    pub fn start(dns_server: &str, options: &PebbleOptions) -> Self {
        let mut attempt = 1;
        loop {
            match Self::start_once(dns_server, options) {
                Ok(pebble) => return pebble,
                Err(log) if attempt < 5 && log.contains("address already in use") => attempt += 1,
                Err(log) => panic!("pebble exited before it was ready:\n{log}"),
            }
        }
    }

    /// One start on new ports; `Err`: pebble exited before both ports accepted a connection
    /// (its log).
    fn start_once(dns_server: &str, options: &PebbleOptions) -> Result<Self, String> {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = crate::free_port();
        let management_port = crate::free_port();
        let ca = TestCa::new();
        let key = KeyPair::generate().expect("pebble key");
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned()]).expect("pebble cert params");
        params.subject_alt_names.push(SanType::IpAddress([127, 0, 0, 1].into()));
        let cert = ca.sign(params, &key);
        let d = dir.path();
        std::fs::write(d.join("cert.pem"), cert).expect("cert");
        std::fs::write(d.join("key.pem"), key.serialize_pem()).expect("key");
        let https_ca_path = d.join("https-ca.pem");
        std::fs::write(&https_ca_path, &ca.cert_pem).expect("ca");
        let validity = options
            .validity_seconds
            .map(|s| format!(",\n    \"certificateValidityPeriod\": {s}"))
            .unwrap_or_default();
        let config = format!(
            r#"{{
  "pebble": {{
    "listenAddress": "127.0.0.1:{port}",
    "managementListenAddress": "127.0.0.1:{management_port}",
    "certificate": "{cert}",
    "privateKey": "{key}",
    "httpPort": {http},
    "tlsPort": {tls},
    "ocspResponderURL": "",
    "externalAccountBindingRequired": false{validity}
  }}
}}"#,
            cert = d.join("cert.pem").display(),
            key = d.join("key.pem").display(),
            http = crate::free_port(),
            tls = crate::free_port(),
        );
        std::fs::write(d.join("pebble.json"), config).expect("pebble.json");
        let log_path = d.join("pebble.log");
        let log = std::fs::File::create(&log_path).expect("log");
        let mut child = Command::new("/usr/bin/pebble")
            .arg("-config")
            .arg(d.join("pebble.json"))
            .args(["-dnsserver", dns_server])
            .env("PEBBLE_VA_NOSLEEP", "1")
            // Pebble reuses half of the valid authorizations by default: a renewal could then
            // skip DNS entirely, and a test of DNS at renewal would pass or fail by chance.
            .env("PEBBLE_AUTHZREUSE", "0")
            .env("PEBBLE_WFE_NONCEREJECT", options.nonce_reject_percent.to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn pebble (apt-get install pebble)");
        wait_for_log(&log_path, "ACME directory available", &mut child, "pebble");
        let deadline = Instant::now() + START_TIMEOUT;
        let listening = |p: u16| std::net::TcpStream::connect(("127.0.0.1", p)).is_ok();
        while !(listening(port) && listening(management_port)) {
            if let Ok(Some(_)) = child.try_wait() {
                return Err(std::fs::read_to_string(&log_path).unwrap_or_default());
            }
            assert!(Instant::now() < deadline, "pebble not listening in {START_TIMEOUT:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Self {
            port,
            management_port,
            https_ca_pem: ca.cert_pem,
            https_ca_path,
            dir,
            child: Some(child),
        })
    }

    /// The directory URL.
    pub fn directory_url(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.port)
    }

    /// The root that issues certificates in this run (changes at every start), from the
    /// management endpoint.
    pub async fn issuing_root_pem(&self) -> String {
        let client = crate::Client::tls(&self.https_ca_pem, &[], Some("localhost"));
        let url = format!("https://127.0.0.1:{}/roots/0", self.management_port);
        let reply = client.get(&url).await.expect("pebble roots");
        assert_eq!(reply.status, 200, "pebble /roots/0");
        String::from_utf8(reply.body.to_vec()).expect("PEM")
    }

    /// Pebble's log so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pebble.log")).unwrap_or_default()
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
