//! Span and event fields as `name=value` (the message bare), like tracing-subscriber's own text formatter, except
//! that control characters and Unicode line separators are escaped. That formatter writes values recorded with `%`
//! as they are, so client text in them (a percent-decoded path segment, a token's `Action`, a JSON string) could
//! start a forged line of its own. Shared by the service and the emulator, whose logs both carry client text.

use std::fmt::{self, Write as _};

use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::format::{self, FormatFields};

/// The field formatter to give `tracing_subscriber::fmt`'s `fmt_fields`.
#[must_use]
pub fn escaping() -> impl for<'writer> FormatFields<'writer> + Send + Sync + 'static {
    format::debug_fn(|writer, field, value| {
        let mut writer = Escaping(writer);
        match field.name() {
            "message" => write!(writer, "{value:?}"),
            name => write!(writer, "{}={value:?}", name.strip_prefix("r#").unwrap_or(name)),
        }
    })
    .delimited(" ")
}

/// Writes through to `W`, escaping what could end or disguise a line.
struct Escaping<W>(W);

impl<W: fmt::Write> fmt::Write for Escaping<W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        for c in text.chars() {
            match c {
                '\n' => self.0.write_str("\\n")?,
                '\r' => self.0.write_str("\\r")?,
                '\t' => self.0.write_str("\\t")?,
                c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') => {
                    write!(self.0, "\\u{{{:x}}}", u32::from(c))?;
                }
                c => self.0.write_char(c)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex, PoisonError};

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    /// Collects what the subscriber writes.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'writer> MakeWriter<'writer> for Sink {
        type Writer = Self;

        fn make_writer(&'writer self) -> Self {
            self.clone()
        }
    }

    #[test]
    fn every_field_is_escaped_and_the_event_stays_one_line() {
        let sink = Sink::default();
        let subscriber = tracing_subscriber::fmt()
            .fmt_fields(escaping())
            .with_ansi(false)
            .with_writer(sink.clone())
            .finish();
        let forged = "x\nINFO forged\r\n\ttab\u{7}bell\u{2029}";
        tracing::subscriber::with_default(subscriber, || {
            tracing::info_span!("span", r#type = %forged).in_scope(|| {
                tracing::info!(reason = %forged, quoted = forged, "refused: {forged}");
            });
        });
        let written = String::from_utf8(sink.0.lock().unwrap_or_else(PoisonError::into_inner).clone()).expect("UTF-8");
        assert_eq!(written.matches('\n').count(), 1, "{written}");
        assert!(!written.contains(['\r', '\t', '\u{7}', '\u{2029}']), "{written}");
        let escaped = r"x\nINFO forged\r\n\ttab\u{7}bell\u{2029}";
        assert!(written.contains(&format!("type={escaped}")), "{written}");
        assert!(written.contains(&format!("refused: {escaped}")), "{written}");
        assert!(written.contains(&format!("reason={escaped}")), "{written}");
        // A value recorded with Debug keeps its quotes and its own escapes.
        assert!(written.contains(&format!("quoted=\"{escaped}\"")), "{written}");
    }
}
