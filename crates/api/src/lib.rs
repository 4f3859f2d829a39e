//! The tasks HTTP service: routes, error mapping, OpenAPI document, telemetry, metrics and start-up.

pub mod cli;
mod error;
mod metrics;
mod openapi;
mod routes;
pub mod settings;
pub mod startup;
pub mod telemetry;

pub use error::Problem;
pub use settings::Settings;
pub use startup::{Application, BODY_LIMIT, StartupError};
