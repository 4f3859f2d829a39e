//! Every log line of the suite, from the service and the emulator alike, is checked for secrets as it is written;
//! `TEST_LOG=1` also prints them, and a test can collect the lines that concern it with [`LogCapture`].

use std::io::Write;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use tracing_subscriber::fmt::MakeWriter;

use crate::iam;

/// Text that must never reach a log: any part of a token (RDS or Aurora DSQL: a DSQL token begins with the host and
/// `/?Action=DbConnect`, which no message names that way), the secret keys and passwords the suite uses.
const FORBIDDEN: [&str; 6] = [
    "X-Amz-Signature",
    "X-Amz-Security-Token",
    "Action=DbConnect",
    iam::SECRET_ACCESS_KEY,
    iam::OTHER_SECRET_ACCESS_KEY,
    crate::STATIC_PASSWORD,
];

/// Secrets made while the suite runs (the passwords that test secrets hold), looked for like those above.
static FORBIDDEN_LATER: Mutex<Vec<String>> = Mutex::new(Vec::new());

static LEAKS: Mutex<Vec<String>> = Mutex::new(Vec::new());
/// The captures under way: each collects the events whose text contains its marker.
static CAPTURES: Mutex<Vec<(String, CapturedEvents)>> = Mutex::new(Vec::new());
static PRINT: LazyLock<bool> = LazyLock::new(|| std::env::var_os("TEST_LOG").is_some());

/// Hands tracing one buffer per event and inspects it when the event is complete.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ScanningWriter;

pub(crate) struct EventBuffer(Vec<u8>);

impl<'a> MakeWriter<'a> for ScanningWriter {
    type Writer = EventBuffer;

    fn make_writer(&'a self) -> Self::Writer {
        EventBuffer(Vec::with_capacity(256))
    }
}

impl Write for EventBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for EventBuffer {
    fn drop(&mut self) {
        let line = String::from_utf8_lossy(&self.0);
        let later = FORBIDDEN_LATER.lock().unwrap_or_else(PoisonError::into_inner);
        let leaked = FORBIDDEN
            .iter()
            .copied()
            .chain(later.iter().map(String::as_str))
            .find(|secret| line.contains(*secret));
        if let Some(secret) = leaked {
            let excerpt: String = line.chars().take(160).collect();
            LEAKS
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(format!("`{secret}` logged in: {}", excerpt.replace(secret, "<secret>")));
        }
        drop(later);
        for (marker, events) in CAPTURES.lock().unwrap_or_else(PoisonError::into_inner).iter() {
            if line.contains(marker.as_str()) {
                events
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(line.clone().into_owned());
            }
        }
        if *PRINT {
            let _ = std::io::stdout().write_all(&self.0);
        }
    }
}

type CapturedEvents = Arc<Mutex<Vec<String>>>;

/// Collects, while it lives, every event logged (by any test: tests share the process) whose text contains a marker
/// of the test's own, such as a unique path or database name. Each event is kept whole, trailing newline included.
#[derive(Debug)]
pub struct LogCapture {
    events: CapturedEvents,
}

impl LogCapture {
    /// Starts collecting the events that contain `marker`.
    #[must_use]
    pub fn containing(marker: impl Into<String>) -> Self {
        let events = CapturedEvents::default();
        CAPTURES
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((marker.into(), Arc::clone(&events)));
        Self { events }
    }

    /// The events collected so far, oldest first.
    #[must_use]
    pub fn events(&self) -> Vec<String> {
        self.events.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl Drop for LogCapture {
    fn drop(&mut self) {
        CAPTURES
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|(_, events)| !Arc::ptr_eq(events, &self.events));
    }
}

/// Looks for `secret` in every line logged from now on, as for the suite's fixed secrets.
pub(crate) fn forbid(secret: &str) {
    FORBIDDEN_LATER
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(secret.to_owned());
}

/// Fails the calling test if any line logged so far, by any test, contained a secret.
pub fn assert_no_secrets_logged() {
    let leaks = LEAKS.lock().unwrap_or_else(PoisonError::into_inner);
    assert!(leaks.is_empty(), "secrets in the logs:\n{}", leaks.join("\n"));
}
