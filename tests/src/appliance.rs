use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// The `gatehouse` binary built by `cargo test` (`GATEHOUSE_BIN` overrides).
pub fn gatehouse_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("GATEHOUSE_BIN") {
        return PathBuf::from(path);
    }
    // target/debug/deps/e2e-HASH → target/debug/gatehouse
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("gatehouse");
    assert!(
        bin.exists(),
        "{} is missing: `make test` builds it (or run `cargo build -p gatehouse` first)",
        bin.display()
    );
    bin
}

/// A running appliance with its own temporary directory; killed on drop.
#[derive(Debug)]
pub struct Appliance {
    pub dir: TempDir,
    pub admin: u16,
    child: Option<Child>,
    stderr_path: PathBuf,
    /// The network namespace it runs in (`ip netns exec`), when not the test's own.
    netns: Option<String>,
}

impl Appliance {
    /// Writes `files` (relative path, contents) into a new temporary directory, then starts
    /// `gatehouse run --config gatehouse.toml` there. `{admin}` in the config is replaced by a
    /// free admin port. Does not wait for readiness.
    pub fn start(config: &str, files: &[(&str, &str)]) -> Self {
        Self::start_in(None, config, files)
    }

    /// [`Appliance::start`] inside network namespace `netns` (made by the test; needs root).
    /// The admin API is then only reachable from inside that namespace.
    pub fn start_in_netns(netns: &str, config: &str, files: &[(&str, &str)]) -> Self {
        Self::start_in(Some(netns.to_owned()), config, files)
    }

    fn start_in(netns: Option<String>, config: &str, files: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let admin = crate::free_port();
        for (path, contents) in files {
            let full = dir.path().join(path);
            std::fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
            std::fs::write(&full, contents).expect("write file");
        }
        let config = config.replace("{admin}", &admin.to_string());
        std::fs::write(dir.path().join("gatehouse.toml"), config).expect("write config");
        let stderr_path = dir.path().join("gatehouse.log");
        let mut appliance = Self { dir, admin, child: None, stderr_path, netns };
        appliance.spawn();
        appliance
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(&self.stderr_path).expect("log file");
        let mut command = match &self.netns {
            // `ip netns exec` execs the binary: the child's pid is gatehouse's.
            Some(netns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", netns]).arg(gatehouse_bin());
                c
            }
            None => Command::new(gatehouse_bin()),
        };
        let child = command
            .args(["run", "--config", "gatehouse.toml", "--log-format", "json"])
            .current_dir(self.dir.path())
            // Never the machine's /var/lib/gatehouse: each appliance keeps its own state.
            .env("STATE_DIRECTORY", self.dir.path().join("state"))
            // Benchmarks turn it down: debug logs on every reload cost time.
            .env("RUST_LOG", std::env::var("GATEHOUSE_TEST_LOG").unwrap_or_else(|_| "debug".into()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn gatehouse (is it built? cargo test builds it)");
        self.child = Some(child);
    }

    /// Starts and waits until `/readyz` answers 200.
    pub async fn start_ready(config: &str, files: &[(&str, &str)]) -> Self {
        let appliance = Self::start(config, files);
        appliance.wait_ready().await;
        appliance
    }

    /// Path of a file in the appliance's directory.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Overwrites a file atomically (write + rename), as a careful operator would.
    pub fn write(&self, rel: &str, contents: &str) {
        let path = self.path(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        let tmp = path.with_extension("tmp-write");
        std::fs::write(&tmp, contents).expect("write");
        std::fs::rename(&tmp, &path).expect("rename");
    }

    /// Kills the process at once (SIGKILL: no cleanup of any kind), as a crash or power cut.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the binary again in the same directory (same config and state), killing the
    /// running process first if there is one.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// What the appliance has logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Waits until `/readyz` answers 200 and `/status` shows a served generation, panicking
    /// with the logs after 20 s.
    ///
    /// `/status` is computed off the reload path and follows readiness by a moment: a test
    /// that reads status right after start must not see the document from before the load.
    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let reply = crate::Client::http1().get(&self.admin_url("/readyz")).await;
            if reply.is_ok_and(|reply| reply.status == 200) {
                self.wait_status(|s| s["generation"].as_u64().unwrap_or(0) >= 1).await;
                return;
            }
            assert!(
                Instant::now() < deadline,
                "gatehouse not ready in 20 s; logs:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `http://127.0.0.1:{admin}{path}`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin)
    }

    /// The `/status` document.
    pub async fn status(&self) -> serde_json::Value {
        let reply =
            crate::Client::http1().get(&self.admin_url("/status")).await.expect("GET /status");
        serde_json::from_slice(&reply.body).expect("status is JSON")
    }

    /// Waits until `/status` reports a generation above `after`, and returns that document.
    pub async fn wait_generation(&self, after: u64) -> serde_json::Value {
        self.wait_status(|s| s["generation"].as_u64().unwrap_or(0) > after).await
    }

    /// Waits (20 s at most) until `/status` satisfies `pred`.
    pub async fn wait_status(
        &self,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            // Before the admin API is up there is no status yet: keep asking.
            let status = match crate::Client::http1().get(&self.admin_url("/status")).await {
                Ok(reply) => serde_json::from_slice(&reply.body).unwrap_or(serde_json::Value::Null),
                Err(_) => serde_json::Value::Null,
            };
            if pred(&status) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "status never matched; last: {status:#}\nlogs:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends a signal by name (`HUP`, `TERM`) with the system's `kill`.
    pub fn signal(&self, name: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let status = Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).status();
        assert!(status.map(|s| s.success()).unwrap_or(false), "kill -{name} {pid} failed");
    }

    /// Waits (bounded) for the process to exit and returns its status.
    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        let child = self.child.as_mut().expect("running");
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return status;
            }
            assert!(Instant::now() < deadline, "gatehouse did not exit in {within:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Appliance {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
