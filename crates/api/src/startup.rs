//! Building the application: connect, migrate, bind, and only then run, so that callers (tests especially) can learn
//! the real port before the first request.

use std::net::TcpListener;

use actix_web::dev::Server;
pub use actix_web::dev::ServerHandle;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use infrastructure::{Database, DatabaseError, SdkConfig, SeaOrmTaskRepository};
use tracing_actix_web::TracingLogger;
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

use crate::metrics::{self, Metrics};
use crate::openapi::ApiDoc;
use crate::routes::{self, health, tasks};
use crate::settings::{ServerSettings, Settings};
use crate::telemetry::{ForwardedHeaders, RequestSpan};

/// The largest request body accepted: a name is at most 255 characters, so 16 KiB is generous.
pub const BODY_LIMIT: usize = 16 * 1024;

/// Why the application could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Database(#[from] DatabaseError),
    #[error("cannot open the reader pool (database.reader): {0}")]
    Reader(#[source] DatabaseError),
    #[error("cannot listen on {address}: {source} (set APP__SERVER__HOST and APP__SERVER__PORT)")]
    Bind {
        address: String,
        #[source]
        source: std::io::Error,
    },
}

/// A bound, not yet running, tasks service.
pub struct Application {
    port: u16,
    server: Server,
    database: Database,
    reader: Option<Database>,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl Application {
    /// Connects to the database, applies migrations when configured to, and binds the listening socket. IAM
    /// credentials, when used, come from the AWS SDK's default chain.
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        Self::build_with_aws(settings, None).await
    }

    /// Like [`Application::build`], with the AWS configuration (credentials, region) supplied by the caller.
    pub async fn build_with_aws(settings: Settings, aws: Option<SdkConfig>) -> Result<Self, StartupError> {
        let database = Database::connect_with_aws(&settings.database, aws.clone()).await?;
        if settings.database.migrate_on_start {
            database.migrate_up(None).await?;
        }
        // Opened at start like the writer's, so that a wrong reader URL stops the service with the driver's reason.
        let reader = match settings.database.reader_settings() {
            Some(reader) => Some(
                Box::pin(Database::connect_with_aws(&reader, aws))
                    .await
                    .map_err(StartupError::Reader)?,
            ),
            None => None,
        };
        database.close_idle().await;
        if let Some(reader) = &reader {
            reader.close_idle().await;
        }
        let address = format!("{}:{}", settings.server.host, settings.server.port);
        let bind_error = |source| StartupError::Bind {
            address: address.clone(),
            source,
        };
        let listener = TcpListener::bind(&address).map_err(bind_error)?;
        let port = listener.local_addr().map_err(bind_error)?.port();
        let server = serve(listener, &database, reader.as_ref(), &settings.server).map_err(bind_error)?;
        tracing::info!(%address, port, "listening");
        Ok(Self {
            port,
            server,
            database,
            reader,
        })
    }

    /// The port actually bound (useful when the configured port was 0).
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A handle to stop the server from elsewhere (tests, embedding applications).
    #[must_use]
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until SIGINT or SIGTERM (or the server handle's stop), lets in-flight requests finish, then closes the
    /// database pool.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let result = self.server.await;
        self.database.close().await;
        if let Some(reader) = self.reader {
            reader.close().await;
        }
        result
    }
}

fn serve(
    listener: TcpListener,
    database: &Database,
    reader: Option<&Database>,
    settings: &ServerSettings,
) -> std::io::Result<Server> {
    let metrics = web::Data::new(Metrics::new(database, reader));
    let mut repository = SeaOrmTaskRepository::new(database.clone());
    if let Some(reader) = reader {
        repository = repository.with_reader(reader.clone());
    }
    let repository = web::Data::new(repository);
    let database = web::Data::new(database.clone());
    let openapi = ApiDoc::openapi();
    let forwarded = ForwardedHeaders {
        trusted: settings.trust_forwarded_for,
    };
    let mut server = HttpServer::new(move || {
        App::new()
            .wrap(from_fn(routes::head_as_get))
            .wrap(TracingLogger::<RequestSpan>::new())
            // Outermost, so that the time it measures includes the log span's.
            .wrap(metrics.middleware())
            .app_data(forwarded)
            .app_data(repository.clone())
            .app_data(database.clone())
            .configure(tasks::configure::<SeaOrmTaskRepository>)
            .configure(health::configure)
            .app_data(metrics.clone())
            .configure(metrics::configure)
            .service(
                web::resource("/docs")
                    .route(web::get().to(|| async { web::Redirect::to("/docs/") }))
                    .default_service(web::to(routes::method_not_allowed("GET, HEAD"))),
            )
            .service(SwaggerUi::new("/docs/{_:.*}").url("/openapi.json", openapi.clone()))
            // Swagger UI serves GET alone; other methods on its paths get the same 405 as the API's own paths do.
            .service(
                web::resource(["/docs/{_:.*}", "/openapi.json"])
                    .default_service(web::to(routes::method_not_allowed("GET, HEAD"))),
            )
            .default_service(web::to(routes::route_not_found))
    })
    .shutdown_timeout(settings.shutdown_timeout.as_secs())
    .listen(listener)?;
    if let Some(workers) = settings.workers {
        server = server.workers(workers);
    }
    Ok(server.run())
}
