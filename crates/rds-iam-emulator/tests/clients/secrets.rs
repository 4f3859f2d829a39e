//! The upstream URL's password, which the command line carries, in none of the binary's messages.

use std::process::Command;

const PASSWORD: &str = "upstream-secret-from-the-command-line";

/// Runs the binary with `upstream` and a valid credentials file; returns everything it wrote, once it has stopped.
fn run_with_upstream(upstream: &str) -> String {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let credentials = directory.path().join("credentials");
    std::fs::write(
        &credentials,
        "[default]\naws_access_key_id = AKIAEXAMPLE\naws_secret_access_key = example/secret\n",
    )
    .expect("write credentials");
    let output = Command::new(env!("CARGO_BIN_EXE_rds-iam-emulator"))
        .args(["--listen", "127.0.0.1:0", "--upstream", upstream, "--credentials"])
        .arg(&credentials)
        .arg("--tls-dir")
        .arg(directory.path())
        .output()
        .expect("the emulator runs");
    assert!(!output.status.success(), "it must refuse {upstream}");
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn a_refused_upstream_url_is_reported_without_its_password() {
    for upstream in [
        // Not a URL at all.
        format!("mysql://root:{PASSWORD}@[::1"),
        // A URL, for no protocol the emulator speaks.
        format!("ftp://root:{PASSWORD}@127.0.0.1:21"),
    ] {
        let messages = run_with_upstream(&upstream);

        assert!(messages.contains("--upstream"), "{messages}");
        assert!(!messages.contains(PASSWORD), "{messages}");
    }
}
