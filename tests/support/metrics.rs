//! `GET /metrics` read the way Prometheus reads it, for the tests that watch a figure move.

use std::collections::HashMap;

use crate::TestApp;

/// One scrape: the text, and every series (its name and labels as the service writes them) with its value.
#[derive(Debug)]
pub struct Scrape {
    pub text: String,
    values: HashMap<String, f64>,
}

impl Scrape {
    /// Scrapes `GET /metrics` of `app`, checking the answer's status and media type.
    pub async fn of(app: &TestApp) -> Self {
        let response = app.get("/metrics").await;
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        let text = response.text().await.expect("a body");
        let values = text
            .lines()
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .map(|line| {
                let (series, value) = line.rsplit_once(' ').expect("`series value`");
                (series.to_owned(), value.parse().expect("a number"))
            })
            .collect();
        Self { text, values }
    }

    /// The value of `series`, failing the test when it is not there.
    #[must_use]
    pub fn value(&self, series: &str) -> f64 {
        self.values
            .get(series)
            .copied()
            .unwrap_or_else(|| panic!("no {series} in:\n{}", self.text))
    }

    /// A counter that may not have been created yet: 0 until its first event.
    #[must_use]
    pub fn count(&self, series: &str) -> f64 {
        self.values.get(series).copied().unwrap_or(0.0)
    }
}
