use std::process::Command;

use gatehouse_tests::gatehouse_bin;

#[test]
fn version_prints_the_version() {
    let out = Command::new(gatehouse_bin()).arg("version").output().expect("run gatehouse");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("gatehouse "));
}

#[test]
fn check_accepts_the_examples() {
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");
    for file in ["gatehouse.toml", "gateway-api.toml", "kubernetes.toml"] {
        let out = Command::new(gatehouse_bin())
            .args(["check", "--config", &format!("{examples}/{file}")])
            .output()
            .expect("run gatehouse check");
        assert!(
            out.status.success(),
            "{file}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn check_reports_every_error_with_its_place() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.toml"),
        "[admin]\nlisten = \"127.0.0.1:9901\"\nbogus = 1\n",
    )
    .unwrap();
    let out = Command::new(gatehouse_bin())
        .args(["check", "--config", "bad.toml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.toml:3:1"), "{stderr}");
    assert!(stderr.contains("bogus"), "{stderr}");
}

#[test]
fn check_reports_yaml_errors_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("gatehouse.toml"), "[gateway_api]\nmanifests = [\"m\"]\n")
        .unwrap();
    std::fs::create_dir(dir.path().join("m")).unwrap();
    let route = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: r\n  namespace: default\nspec:\n  rules:\n  - matches:\n    - path:\n        type: Bogus\n        value: /\n";
    std::fs::write(dir.path().join("m/a.yaml"), format!("{route}---\n{route}")).unwrap();
    std::fs::write(dir.path().join("m/b.yaml"), "kind: [unclosed\n").unwrap();
    let out = Command::new(gatehouse_bin())
        .args(["check", "--config", "gatehouse.toml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("a.yaml:1"), "{stderr}");
    assert!(stderr.contains("HTTPRoute default/r"), "{stderr}");
    assert!(stderr.contains("b.yaml:1"), "{stderr}");
}

#[test]
fn run_with_an_invalid_config_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("gatehouse.toml"), "[[routes]]\nname = 1\n").unwrap();
    let out = Command::new(gatehouse_bin())
        .args(["run", "--config", "gatehouse.toml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("gatehouse.toml:2"));
}

#[test]
fn kube_manifests_prints_multi_document_yaml() {
    let out = Command::new(gatehouse_bin())
        .args(["kube", "manifests", "--controller-name", "example.com/edge"])
        .output()
        .expect("run gatehouse kube manifests");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let yaml = String::from_utf8_lossy(&out.stdout);
    assert!(yaml.contains("# Gatehouse cluster mode"), "{yaml}");
    assert!(yaml.contains("kubectl config set-credentials"), "{yaml}");
    // Our CRD (WasmPlugin) and the eight objects of cluster mode.
    assert_eq!(yaml.matches("\n---\n").count(), 9, "{yaml}");
    assert!(yaml.contains("name: wasmplugins.gatehouse.dev\n"), "{yaml}");
    assert!(yaml.contains("kind: ClusterRole\n"), "{yaml}");
    assert!(yaml.contains("controllerName: example.com/edge"), "{yaml}");
}
