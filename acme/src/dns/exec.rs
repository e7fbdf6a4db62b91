//! The `exec` hook: `<command> <args…> present|cleanup`, the record in environment variables
//! (`GATEHOUSE_ACME_FQDN`, `GATEHOUSE_ACME_VALUE`), for any DNS service we have no provider for.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use gatehouse_model::acme::ExecHook;
use tokio::process::Command;

use super::{DnsError, DnsProvider, TxtRecord};

/// How much of the hook's stderr an error quotes.
const STDERR_TAIL: usize = 400;

/// Runs an operator's program to publish and remove records.
#[derive(Clone, Debug)]
pub struct ExecProvider {
    command: PathBuf,
    args: Vec<String>,
    timeout: Duration,
}

impl ExecProvider {
    /// A hook as configured.
    pub fn new(spec: &ExecHook) -> Self {
        Self { command: spec.command.clone(), args: spec.args.clone(), timeout: spec.timeout }
    }

    async fn run(&self, action: &str, record: &TxtRecord) -> Result<(), DnsError> {
        let fail = |message: String| DnsError::Provider {
            provider: "exec",
            message: format!("{} {action}: {message}", self.command.display()),
        };
        let child = Command::new(&self.command)
            .args(&self.args)
            .arg(action)
            .env("GATEHOUSE_ACME_ACTION", action)
            .env("GATEHOUSE_ACME_FQDN", &record.fqdn)
            .env("GATEHOUSE_ACME_NAME", record.fqdn.trim_end_matches('.'))
            .env("GATEHOUSE_ACME_VALUE", &record.value)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| fail(e.to_string()))?;
        let output = tokio::time::timeout(self.timeout, child.wait_with_output())
            .await
            .map_err(|_| fail(format!("did not finish in {:?}", self.timeout)))?
            .map_err(|e| fail(e.to_string()))?;
        if output.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stderr = stderr.trim();
        let tail: String =
            stderr.chars().skip(stderr.chars().count().saturating_sub(STDERR_TAIL)).collect();
        Err(fail(format!("{}: {tail}", output.status)))
    }
}

#[async_trait]
impl DnsProvider for ExecProvider {
    fn name(&self) -> &'static str {
        "exec"
    }

    async fn present(&self, record: &TxtRecord) -> Result<(), DnsError> {
        self.run("present", record).await
    }

    async fn cleanup(&self, record: &TxtRecord) -> Result<(), DnsError> {
        self.run("cleanup", record).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(script: &str, timeout: Duration) -> ExecProvider {
        ExecProvider::new(&ExecHook {
            command: "/bin/sh".into(),
            args: vec!["-c".into(), script.into(), "hook".into()],
            timeout,
        })
    }

    fn record() -> TxtRecord {
        TxtRecord { fqdn: "_acme-challenge.example.test.".into(), value: "token-value".into() }
    }

    #[tokio::test]
    async fn the_hook_gets_action_and_record_in_its_environment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("calls");
        let script =
            format!("echo \"$1 $GATEHOUSE_ACME_FQDN $GATEHOUSE_ACME_VALUE\" >> {}", out.display());
        let provider = hook(&script, Duration::from_secs(10));
        provider.present(&record()).await.expect("present");
        provider.cleanup(&record()).await.expect("cleanup");
        let calls = std::fs::read_to_string(out).expect("calls");
        assert_eq!(
            calls,
            "present _acme-challenge.example.test. token-value\n\
             cleanup _acme-challenge.example.test. token-value\n"
        );
    }

    #[tokio::test]
    async fn a_failing_hook_is_an_error_quoting_its_stderr() {
        let provider = hook("echo zone locked >&2; exit 3", Duration::from_secs(10));
        let err = provider.present(&record()).await.expect_err("fails");
        let text = err.to_string();
        assert!(text.contains("zone locked") && text.contains("present"), "{text}");
    }

    #[tokio::test]
    async fn a_hanging_hook_is_stopped_at_its_timeout() {
        let provider = hook("sleep 30", Duration::from_millis(200));
        let err = provider.present(&record()).await.expect_err("times out");
        assert!(err.to_string().contains("did not finish"), "{err}");
    }
}
