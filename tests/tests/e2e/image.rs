//! The appliance image, booted: builds it with `images/build.sh` (the debug binary the tests
//! run, stripped), boots it under `qemu-system-x86_64` (KVM when usable, TCG otherwise) with
//! user-mode networking, and talks to it through a host port forwarded to loopback.
//!
//! Slow (minutes under TCG) and needs root (the image build), qemu, mmdebstrap and, the first
//! time, the Debian package mirror for the cached base; the names say so.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use gatehouse_tests::{Client, EchoBackend, free_port, gatehouse_bin};

/// How long a boot may take to serve, under TCG on a busy two-core machine.
const BOOT_BUDGET: Duration = Duration::from_secs(420);
/// The address the guest reaches the host's echo backend at (a user-net guestfwd).
const HOST_BACKEND: &str = "10.0.2.100:8000";

/// The built image, once per test run: (raw image, kernel, initrd).
fn image() -> &'static (PathBuf, PathBuf, PathBuf) {
    static IMAGE: OnceLock<(PathBuf, PathBuf, PathBuf)> = OnceLock::new();
    // Concurrent callers wait for the one build.
    IMAGE.get_or_init(|| {
        let bin = gatehouse_bin();
        let out = bin.parent().expect("target dir").join("image-test");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../images/build.sh");
        let status = Command::new(script)
            .arg("--binary")
            .arg(&bin)
            .arg("--strip")
            .arg("--out")
            .arg(&out)
            .status()
            .expect("run images/build.sh");
        assert!(status.success(), "images/build.sh failed: {status}");
        (out.join("gatehouse.raw"), out.join("vmlinuz"), out.join("initrd.img"))
    })
}

/// A config drive: an ext4 filesystem labelled GATEHOUSE holding `gatehouse.toml`
/// (`mkfs.ext4 -d`, no loop mount).
fn config_drive(dir: &Path, config: &str) -> PathBuf {
    let content = dir.join("drive");
    std::fs::create_dir_all(&content).expect("drive directory");
    std::fs::write(content.join("gatehouse.toml"), config).expect("drive gatehouse.toml");
    let image = dir.join("drive.img");
    let status = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "GATEHOUSE", "-d"])
        .arg(&content)
        .arg(&image)
        .arg("8M")
        .status()
        .expect("mkfs.ext4 (e2fsprogs)");
    assert!(status.success());
    image
}

/// A booted VM: killed (and reaped) on drop, whatever the test did.
struct Vm {
    child: Child,
    console: PathBuf,
    http: u16,
    started: Instant,
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Vm {
    fn boot(dir: &Path, drive: &Path, backend_port: u16) -> Self {
        let (raw, kernel, initrd) = image();
        let http = free_port();
        let console = dir.join("console.log");
        let kvm = Path::new("/dev/kvm").exists() && std::env::var_os("GATEHOUSE_KVM").is_some();
        let mut qemu = Command::new("qemu-system-x86_64");
        qemu.args(["-machine", "q35", "-m", "512", "-smp", "1", "-nographic", "-no-reboot"])
            .args(["-accel", if kvm { "kvm" } else { "tcg" }])
            .arg("-kernel")
            .arg(kernel)
            .arg("-initrd")
            .arg(initrd)
            .args(["-append", "root=/dev/vda ro console=ttyS0 loglevel=4 panic=-1"])
            .arg("-drive")
            .arg(format!("file={},format=raw,if=virtio,snapshot=on", raw.display()))
            .arg("-drive")
            .arg(format!("file={},format=raw,if=virtio,readonly=on", drive.display()))
            .args(["-netdev"])
            .arg(format!(
                "user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:{http}-:80,\
                 guestfwd=tcp:{HOST_BACKEND}-cmd:{} {backend_port}",
                relay_command()
            ))
            .args(["-device", "virtio-net-pci,netdev=net0", "-device", "virtio-rng-pci"])
            .args(["-serial"])
            .arg(format!("file:{}", console.display()))
            .args(["-monitor", "none"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let child = qemu.spawn().expect("qemu-system-x86_64 (package qemu-system-x86)");
        Self { child, console, http, started: Instant::now() }
    }

    fn console(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.console).unwrap_or_default()).into_owned()
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http)
    }

    /// Waits (bounded) until `GET path` through the forwarded port answers 200.
    async fn wait_for(&mut self, path: &str) -> Duration {
        loop {
            if let Ok(reply) = Client::http1().get(&self.url(path)).await
                && reply.status == 200
            {
                return self.started.elapsed();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("qemu exited ({status}); console:\n{}", self.console());
            }
            assert!(
                self.started.elapsed() < BOOT_BUDGET,
                "{path} never answered 200 in {BOOT_BUDGET:?}; console:\n{}",
                self.console()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// What qemu runs per guest connection to reach the host backend (`guestfwd=...-cmd:`): a tiny
/// relay in bash (its /dev/tcp), written once next to the image.
fn relay_command() -> &'static str {
    static RELAY: OnceLock<String> = OnceLock::new();
    RELAY.get_or_init(|| {
        let (raw, _, _) = image();
        let script = raw.with_file_name("relay.sh");
        std::fs::write(
            &script,
            "#!/bin/bash\nexec 3<>/dev/tcp/127.0.0.1/$1\ncat <&3 & cat >&3\nwait\n",
        )
        .expect("write the relay script");
        let status = Command::new("chmod").arg("+x").arg(&script).status();
        assert!(status.is_ok_and(|s| s.success()));
        script.display().to_string()
    })
}

fn appliance_config(admin_route: bool) -> String {
    let mut config = format!(
        r#"[admin]
listen = "127.0.0.1:9901"

[[gateways]]
name = "edge"
  [[gateways.listeners]]
  name = "http"
  port = 80
  protocol = "HTTP"

[[routes]]
name = "backend"
parents = ["edge"]
  [[routes.rules]]
  matches = [{{ path = {{ prefix = "/echo" }} }}]
  backends = [{{ address = "{HOST_BACKEND}" }}]
"#
    );
    if admin_route {
        config.push_str(
            r#"  [[routes.rules]]
  matches = [{ path = { exact = "/readyz" } }, { path = { exact = "/status" } }]
  backends = [{ address = "127.0.0.1:9901" }]
"#,
        );
    }
    config
}

/// `/status` once it shows a served generation: it follows readiness by a moment (its own task
/// computes it after the swap, and under TCG that moment can be long). 60 s at most.
async fn served_status(vm: &Vm) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = Client::http1().get(&vm.url("/status")).await.expect("GET /status").json();
        if status["generation"].as_u64().is_some_and(|g| g >= 1) || Instant::now() > deadline {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn slow_image_boots_under_qemu_and_proxies_to_a_host_backend_needs_root() {
    let backend = EchoBackend::start("host").await;
    let dir = tempfile::tempdir().unwrap();
    let drive = config_drive(dir.path(), &appliance_config(true));
    let mut vm = Vm::boot(dir.path(), &drive, backend.port());

    let serving = vm.wait_for("/echo/hello").await;
    eprintln!("image: first proxied 200 after {:.1} s", serving.as_secs_f64());
    let reply = Client::http1().get(&vm.url("/echo/hello")).await.unwrap();
    assert_eq!(reply.backend(), Some("host"));
    let ready = Client::http1().get(&vm.url("/readyz")).await.unwrap();
    assert_eq!(ready.status, 200);
    let status = served_status(&vm).await;
    assert_eq!(status["last_reload"]["ok"], true, "{status:#}");

    // systemd announced the unit active (Type=notify: only after READY=1) on the console.
    let console = vm.console();
    assert!(console.contains("Started gatehouse.service"), "{console}");
    assert!(console.contains("installed gatehouse.toml"), "{console}");
    assert!(!console.contains("Failed to start"), "{console}");
}

#[tokio::test]
async fn slow_image_with_a_bad_config_drive_stays_up_on_the_default_config_needs_root() {
    let backend = EchoBackend::start("host").await;
    let dir = tempfile::tempdir().unwrap();
    let bad = format!("{}\nbogus_key = 1\n", appliance_config(false));
    let drive = config_drive(dir.path(), &bad);
    let mut vm = Vm::boot(dir.path(), &drive, backend.port());

    // The shipped default serves the status page on port 80.
    vm.wait_for("/readyz").await;
    let status = served_status(&vm).await;
    assert_eq!(status["last_reload"]["ok"], false, "{status:#}");
    let errors = status["last_reload"]["errors"].to_string();
    assert!(errors.contains("gatehouse.toml:") && errors.contains("bogus_key"), "{errors}");
    // The drive's route is not served; the unit is up and did not restart.
    let echo = Client::http1().get(&vm.url("/echo/x")).await.unwrap();
    assert_eq!(echo.status, 404);
    let console = vm.console();
    assert!(console.contains("Started gatehouse.service"), "{console}");
    assert!(console.contains("bogus_key"), "the error is on the console:\n{console}");
    assert!(!console.contains("Scheduled restart job"), "{console}");
}
