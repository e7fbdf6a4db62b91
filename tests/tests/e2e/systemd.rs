//! The systemd side of the daemon: the `sd_notify` message sequence on a real datagram socket
//! (`$NOTIFY_SOCKET`), watchdog pings, and the fallback config that keeps a unit with a bad
//! config up.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gatehouse_tests::{Client, free_port, gatehouse_bin};

/// Kills the appliance on drop, so a failing assertion leaves no process behind.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Running {
    fn signal(&self, name: &str) {
        let status =
            Command::new("kill").arg(format!("-{name}")).arg(self.0.id().to_string()).status();
        assert!(status.is_ok_and(|s| s.success()), "kill -{name} failed");
    }
}

fn config(admin: u16) -> String {
    format!("[admin]\nlisten = \"127.0.0.1:{admin}\"\n[runtime]\nshutdown_grace_ms = 200\n")
}

fn spawn(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Running {
    let log = std::fs::File::create(dir.join("gatehouse.log")).expect("log file");
    let mut command = Command::new(gatehouse_bin());
    command
        .arg("run")
        .args(args)
        .current_dir(dir)
        .env("STATE_DIRECTORY", dir.join("state"))
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    for (key, value) in env {
        command.env(key, value);
    }
    Running(command.spawn().expect("spawn gatehouse"))
}

/// The next notification that is not a watchdog ping, and how many pings came before it.
fn next_message(socket: &UnixDatagram, pings: &mut usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = vec![0u8; 4096];
    loop {
        assert!(Instant::now() < deadline, "no notification in 20 s");
        let n = socket.recv(&mut buf).expect("a notification within the read timeout");
        let message = String::from_utf8_lossy(&buf[..n]).into_owned();
        if message.trim_end() == "WATCHDOG=1" {
            *pings += 1;
        } else {
            return message;
        }
    }
}

#[tokio::test]
async fn notify_socket_gets_ready_reloading_ready_stopping_and_watchdog_pings() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind the notify socket");
    socket.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let admin = free_port();
    std::fs::write(dir.path().join("gatehouse.toml"), config(admin)).unwrap();
    let gh = spawn(
        dir.path(),
        &["--config", "gatehouse.toml"],
        &[("NOTIFY_SOCKET", socket_path.to_str().unwrap()), ("WATCHDOG_USEC", "200000")],
    );
    let mut pings = 0;

    let ready = next_message(&socket, &mut pings);
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready}");
    assert!(ready.contains("STATUS=serving generation 1"), "{ready}");
    // READY=1 comes once serving: the admin API answers by then.
    let reply = Client::http1().get(&format!("http://127.0.0.1:{admin}/readyz")).await.unwrap();
    assert_eq!(reply.status, 200);

    gh.signal("HUP");
    let reloading = next_message(&socket, &mut pings);
    assert!(reloading.lines().any(|l| l == "RELOADING=1"), "{reloading}");
    let usec = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .expect("MONOTONIC_USEC with RELOADING=1");
    assert!(usec.parse::<u64>().unwrap() > 0, "{reloading}");
    let ready = next_message(&socket, &mut pings);
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready}");
    assert!(ready.contains("STATUS=serving generation 2"), "{ready}");

    // Pings come every 100 ms; wait for a few more before stopping.
    let seen = pings;
    while pings < seen + 2 {
        let mut buf = [0u8; 64];
        let n = socket.recv(&mut buf).expect("watchdog pings");
        if &buf[..n] == b"WATCHDOG=1\n" {
            pings += 1;
        }
    }

    gh.signal("TERM");
    let stopping = next_message(&socket, &mut pings);
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping}");
    assert!(pings >= 2, "watchdog pings: {pings}");
}

#[tokio::test]
async fn without_notify_socket_nothing_is_sent_and_it_still_serves() {
    let dir = tempfile::tempdir().unwrap();
    let admin = free_port();
    std::fs::write(dir.path().join("gatehouse.toml"), config(admin)).unwrap();
    let gh = spawn(dir.path(), &["--config", "gatehouse.toml"], &[("WATCHDOG_USEC", "100000")]);
    wait_status(admin, |s| s["last_reload"]["ok"] == true).await;
    gh.signal("TERM");
    let log = wait_log(dir.path(), "stopped").await;
    assert!(!log.contains("cannot notify systemd"), "{log}");
}

/// GET /status until `pred` holds (20 s at most).
async fn wait_status(admin: u16, pred: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = match Client::http1().get(&format!("http://127.0.0.1:{admin}/status")).await {
            Ok(reply) => reply.json(),
            Err(_) => serde_json::Value::Null,
        };
        if pred(&status) {
            return status;
        }
        assert!(Instant::now() < deadline, "status never matched; last: {status:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_log(dir: &Path, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = std::fs::read_to_string(dir.join("gatehouse.log")).unwrap_or_default();
        if log.contains(needle) {
            return log;
        }
        assert!(Instant::now() < deadline, "{needle:?} never logged:\n{log}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn invalid_config_at_boot_serves_the_fallback_and_shows_the_error_until_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let admin = free_port();
    std::fs::write(dir.path().join("fallback.toml"), config(admin)).unwrap();
    std::fs::write(dir.path().join("gatehouse.toml"), "[admin]\nlisten = 42\n").unwrap();
    let _gh = spawn(
        dir.path(),
        &["--config", "gatehouse.toml", "--fallback-config", "fallback.toml"],
        &[],
    );
    let status = wait_status(admin, |s| s["generation"] == 1).await;
    assert_eq!(status["last_reload"]["ok"], false, "{status:#}");
    let errors = status["last_reload"]["errors"].to_string();
    assert!(errors.contains("gatehouse.toml:2:"), "{errors}");
    assert!(status["last_reload"]["warnings"].to_string().contains("is invalid"), "{status:#}");
    let ready = Client::http1().get(&format!("http://127.0.0.1:{admin}/readyz")).await.unwrap();
    assert_eq!(ready.status, 200);
    let log = wait_log(dir.path(), "serving the fallback config").await;
    assert!(log.contains("gatehouse.toml:2:"), "{log}");

    // Fixing the file reloads it (the watch covers it from boot on).
    let fixed = format!(
        "{}[runtime]\nshutdown_grace_ms = 100\n",
        config(admin).replace("[runtime]\nshutdown_grace_ms = 200\n", "")
    );
    std::fs::write(dir.path().join("gatehouse.toml.tmp"), fixed).unwrap();
    std::fs::rename(dir.path().join("gatehouse.toml.tmp"), dir.path().join("gatehouse.toml"))
        .unwrap();
    let status = wait_status(admin, |s| s["generation"] == 2).await;
    assert_eq!(status["last_reload"]["ok"], true, "{status:#}");
}

#[tokio::test]
async fn missing_config_serves_the_fallback_without_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let admin = free_port();
    std::fs::write(dir.path().join("fallback.toml"), config(admin)).unwrap();
    let _gh = spawn(
        dir.path(),
        &["--config", "absent/gatehouse.toml", "--fallback-config", "fallback.toml"],
        &[],
    );
    let status = wait_status(admin, |s| s["generation"] == 1).await;
    assert_eq!(status["last_reload"]["ok"], true, "{status:#}");
    assert!(status["last_reload"]["warnings"].to_string().contains("does not exist"), "{status:#}");
}

#[test]
fn invalid_config_and_invalid_fallback_fail_the_start() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("gatehouse.toml"), "bogus = 1\n").unwrap();
    std::fs::write(dir.path().join("fallback.toml"), "also = 1\n").unwrap();
    let out = Command::new(gatehouse_bin())
        .args(["run", "--config", "gatehouse.toml", "--fallback-config", "fallback.toml"])
        .current_dir(dir.path())
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .output()
        .expect("run gatehouse");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("fallback.toml") && stderr.contains("gatehouse.toml"), "{stderr}");
}
