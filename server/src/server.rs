//! Starting and stopping the server: the gRPC services, the standard health
//! service kept current in the background, reflection, the Prometheus
//! endpoint, graceful shutdown.

use crate::{
    config::{MigrateCommand, Settings},
    metrics::Metrics,
    migrate::{MigrateOptions, MigrateReport},
    registry::{Registry, StartupPolicy},
    service::DatabaseService,
};
use futures::StreamExt;
use iadb::{Error, proto::database_server::DatabaseServer};
use std::{collections::HashMap, future::Future, net::SocketAddr, sync::Arc};
use tokio::net::TcpListener;
use tonic_health::{ServingStatus, server::HealthReporter};
use tracing::{info, warn};

/// The standard health service name that covers the whole server.
pub const OVERALL_HEALTH_SERVICE: &str = "";

/// A server bound to its address, ready to serve.
pub struct BoundServer {
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    registry: Arc<Registry>,
    settings: Settings,
}

impl BoundServer {
    /// Connects every database (one that is down is served later, unless
    /// `--require-all-databases`), runs start-up migrations, and binds the
    /// listen address.
    pub async fn bind(settings: Settings) -> Result<Self, Error> {
        settings
            .check_exposure()
            .map_err(|e| Error::invalid_argument(e.to_string()))?;
        // A certificate and key that do not load stop the start here,
        // before any database work.
        if let Some(tls) = &settings.tls {
            crate::tls::server_config(tls).map_err(tls_error)?;
        }
        let registry = Arc::new(Registry::new(
            &settings.databases,
            settings.pool,
            StartupPolicy {
                migrate: settings.migrate,
                migrate_options: settings.migrate_options,
            },
            settings.replication,
        )?);
        registry.start_all(settings.require_all_databases).await?;
        let listener = TcpListener::bind(settings.listen).await.map_err(|e| {
            Error::unavailable(format!(
                "cannot listen on {}: {e} (choose another address with --listen)",
                settings.listen
            ))
        })?;
        let metrics_listener = match settings.metrics_listen {
            Some(addr) => Some(TcpListener::bind(addr).await.map_err(|e| {
                Error::unavailable(format!(
                    "cannot listen on {addr} (metrics): {e} (choose another address with --metrics-listen)"
                ))
            })?),
            None => None,
        };
        Ok(Self {
            listener,
            metrics_listener,
            registry,
            settings,
        })
    }

    /// The address of the Prometheus endpoint, when one is configured.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// The address actually bound (port 0 resolved).
    pub fn local_addr(&self) -> Result<SocketAddr, Error> {
        self.listener
            .local_addr()
            .map_err(|e| Error::internal(format!("no local address: {e}")))
    }

    /// Serves until `shutdown` completes; in-flight calls finish first, then
    /// the pools close.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), Error> {
        let Self {
            listener,
            metrics_listener,
            registry,
            settings,
        } = self;
        let metrics = Metrics::new();
        let metrics_task = metrics_listener.map(|listener| {
            if let Ok(addr) = listener.local_addr() {
                info!("metrics on http://{addr}/metrics");
            }
            tokio::spawn(crate::metrics::serve(
                listener,
                metrics.clone(),
                registry.clone(),
                std::future::pending(),
            ))
        });
        let (reporter, health_service) = tonic_health::server::health_reporter();
        reporter
            .set_serving::<DatabaseServer<DatabaseService>>()
            .await;
        // Every database has a status before the first call is answered
        // (a probe never sees NOT_FOUND for a configured database).
        let mut last = HashMap::new();
        check_all(&reporter, &registry, &metrics, &mut last).await;
        let checker = tokio::spawn(keep_health_current(
            reporter,
            registry.clone(),
            settings.health_interval,
            metrics.clone(),
            last,
        ));
        // Databases that are down are retried in a task of their own, so a
        // connect attempt that hangs does not hold up the health rounds.
        let connector = tokio::spawn(keep_connecting(registry.clone(), settings.health_interval));
        // Replay lag of each replica, and which host is the primary.
        let replica_checkers = registry.start_replication();
        // Both reflection versions: grpcurl and many tools still ask v1alpha.
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(iadb::proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_v1 = reflection()
            .build_v1()
            .map_err(|e| Error::internal(format!("reflection: {e}")))?;
        let reflection_v1alpha = reflection()
            .build_v1alpha()
            .map_err(|e| Error::internal(format!("reflection: {e}")))?;
        let max = settings.limits.max_message_bytes;
        match &settings.tokens {
            Some(store) => {
                let count = store.current().len();
                info!(
                    file = %store.path().display(),
                    tokens = count,
                    "calls to iadb.v1.Database need a bearer token; health and reflection stay open"
                );
                if count == 0 {
                    warn!("the tokens file has no token: every call will be refused");
                }
                let configured: Vec<&str> = registry.names().collect();
                let tokens = store.current();
                for (token, database) in tokens.unknown_databases(&configured) {
                    warn!(
                        token,
                        database, "a token names a database that is not configured"
                    );
                }
            }
            None if settings.listen.ip().is_loopback() => info!(
                "no --tokens-file: every caller that reaches {} has admin rights on every \
                 database (allowed on loopback only)",
                settings.listen
            ),
            None => warn!(
                "--insecure-no-auth: serving {} WITHOUT authentication; anyone who can reach it \
                 can read, change and migrate every database",
                settings.listen
            ),
        }
        let reloader = settings
            .tokens
            .clone()
            .map(|store| tokio::spawn(crate::auth::reload_on_sighup(store)));
        let guard = crate::layer::CallLayer::new(settings.tokens.clone(), metrics.clone());
        let database = DatabaseServer::new(DatabaseService::new(
            registry.clone(),
            settings.limits,
            settings.migrate_options,
            metrics,
        ))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
        // TCP_NODELAY: a response's last frame goes out at once instead of
        // waiting for the previous segment's ACK (Nagle), which a
        // request/response protocol pays on every call. Keepalive finds
        // peers that vanished without closing.
        // Each accepted stream's close lingers (crate::linger): a client
        // still reading a result's end when the server closes does not
        // lose it to a reset.
        let (tracker, drains) = crate::linger::tracked();
        let incoming = tonic::transport::server::TcpIncoming::from(listener)
            .with_nodelay(Some(true))
            .with_keepalive(Some(std::time::Duration::from_secs(60)))
            .map(move |accepted| accepted.map(|stream| tracker.wrap(stream)));
        let tls = match &settings.tls {
            Some(tls) => {
                let state =
                    crate::tls::TlsState::new(crate::tls::server_config(tls).map_err(tls_error)?);
                let reload = tokio::spawn(state.clone().reload_when_changed(tls.clone()));
                Some((state, reload))
            }
            None => None,
        };
        if let Some(tls) = &settings.tls {
            info!(
                mtls = tls.client_ca_pem.is_some(),
                "serving gRPC over TLS{}",
                if tls.client_ca_pem.is_some() {
                    "; clients must present a certificate signed by --tls-client-ca"
                } else {
                    ""
                }
            );
        }
        let router = tonic::transport::Server::builder()
            .layer(guard)
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(database);
        let result = match &tls {
            Some((state, _)) => {
                router
                    .serve_with_incoming_shutdown(state.accept(incoming), shutdown)
                    .await
            }
            None => {
                router
                    .serve_with_incoming_shutdown(incoming, shutdown)
                    .await
            }
        }
        .map_err(|e| Error::internal(format!("server: {e}")));
        if let Some((_, reload)) = tls {
            reload.abort();
        }
        checker.abort();
        connector.abort();
        for task in replica_checkers {
            task.abort();
        }
        if let Some(task) = reloader {
            task.abort();
        }
        if let Some(task) = metrics_task {
            task.abort();
        }
        // The last connections' drains, then the engines.
        drains.wait().await;
        registry.close().await;
        result
    }
}

fn tls_error(message: String) -> Error {
    Error::invalid_argument(format!(
        "TLS: {message} (check --tls-cert, --tls-key and --tls-client-ca)"
    ))
}

/// Checks every database on an interval and sets its standard health status
/// (service name = database name); the overall status is SERVING while every
/// database is. The first round has already run (see [`check_all`]).
async fn keep_health_current(
    reporter: HealthReporter,
    registry: Arc<Registry>,
    interval: std::time::Duration,
    metrics: Metrics,
    mut last: HashMap<String, bool>,
) {
    let mut ticker = tokio::time::interval(interval);
    // The first tick completes at once; that round was run before serving.
    ticker.tick().await;
    loop {
        ticker.tick().await;
        check_all(&reporter, &registry, &metrics, &mut last).await;
    }
}

/// Every `interval`, connects the databases that are down and re-runs the
/// start-up migrations that failed ([`Registry::retry_not_ready`]).
async fn keep_connecting(registry: Arc<Registry>, interval: std::time::Duration) {
    let mut ticker = tokio::time::interval(interval);
    // An attempt that took long is not followed by a burst of others.
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Start-up has just tried every database.
    ticker.tick().await;
    loop {
        ticker.tick().await;
        registry.retry_not_ready().await;
    }
}

/// One round of health checks: sets each database's standard health status,
/// the overall one, and the `database_up` gauge; logs changes.
async fn check_all(
    reporter: &HealthReporter,
    registry: &Registry,
    metrics: &Metrics,
    last: &mut HashMap<String, bool>,
) {
    let mut all = true;
    let names: Vec<String> = registry.names().map(str::to_owned).collect();
    for name in names {
        let (healthy, message) = registry.check(&name).await.map_or_else(
            |e| (false, e.message().to_owned()),
            |h| (h.healthy, h.message),
        );
        all &= healthy;
        metrics.set_up(&name, healthy);
        let status = if healthy {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        if last.insert(name.clone(), healthy) != Some(healthy) {
            if healthy {
                info!(database = %name, "health: SERVING");
            } else {
                warn!(database = %name, cause = %message, "health: NOT_SERVING");
            }
        }
        reporter.set_service_status(&name, status).await;
    }
    let overall = if all {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    reporter
        .set_service_status(OVERALL_HEALTH_SERVICE, overall)
        .await;
}

/// `iadb-server migrate ACTION`: connects the one database named in
/// `command` (no start-up migrations, nothing served), runs the action as
/// the Migrate RPC would, with the app folders of `--app-migrations`, and
/// closes.
pub async fn migrate_once(
    settings: &Settings,
    command: &MigrateCommand,
) -> Result<MigrateReport, Error> {
    let action = command.action()?;
    let registry = Registry::new(
        &settings.databases,
        settings.pool,
        StartupPolicy {
            migrate: false,
            migrate_options: settings.migrate_options,
        },
        settings.replication,
    )?;
    registry.connect_only(&command.db).await?;
    let options = MigrateOptions {
        allow_missing: command.allow_missing,
        allow_out_of_order: command.allow_out_of_order,
        ..settings.migrate_options
    };
    let result = registry
        .migrate(&command.db, action, options, Vec::new())
        .await;
    registry.close().await;
    result
}

/// A future that resolves when SIGINT or SIGTERM arrives. The handlers are
/// installed when this is called, not when the future is first polled: a
/// signal that arrives before the server's accept loop first polls its
/// shutdown future (seen on a loaded machine, right after start) then
/// starts a graceful shutdown instead of killing the process. Call it
/// inside the runtime.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send {
    #[cfg(unix)]
    let (interrupt, terminate) = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::interrupt()).ok(),
            signal(SignalKind::terminate()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = wait(interrupt) => {},
                _ = wait(terminate) => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        info!("shutting down: finishing in-flight calls");
    }
}
