//! The upstream URL's password, which the command line carries, in none of the binary's messages.

use crate::support::run_refused;

const PASSWORD: &str = "upstream-secret-from-the-command-line";

#[test]
fn a_refused_upstream_url_is_reported_without_its_password() {
    for upstream in [
        // Not a URL at all.
        format!("mysql://root:{PASSWORD}@[::1"),
        // A URL, for no protocol the emulator speaks.
        format!("ftp://root:{PASSWORD}@127.0.0.1:21"),
    ] {
        let messages = run_refused(&["--upstream", &upstream]);

        assert!(messages.contains("--upstream"), "{messages}");
        assert!(!messages.contains(PASSWORD), "{messages}");
    }
}
