//! TLS for the gRPC listener, with certificates reloaded when their files
//! change.
//!
//! tonic's own TLS setting is fixed when the server starts, so the server
//! does the handshake itself: each accepted connection is handed to a
//! rustls acceptor built from the [`ServerConfig`] in force at that moment,
//! and a background task reads `--tls-cert`, `--tls-key` and
//! `--tls-client-ca` again every [`RELOAD_CHECK`]. A change that loads
//! replaces the configuration for the next handshakes (connections already
//! open keep theirs); one that does not load is logged and the
//! configuration in force stays.

use crate::config::TlsSettings;
use futures::{Stream, StreamExt};
use rustls::{
    RootCertStore, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::WebPkiClientVerifier,
};
use std::{
    sync::{Arc, RwLock},
    time::Duration,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tracing::{debug, error, info};

/// How often the certificate files are read again.
pub const RELOAD_CHECK: Duration = Duration::from_secs(1);

/// Longest a TLS handshake may take; a client that stalls it is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes in progress at once; more connections wait to be accepted.
const CONCURRENT_HANDSHAKES: usize = 128;

/// The rustls configuration of `tls`'s PEM files: the certificate chain
/// and key, client certificates required when a client CA is given, and
/// HTTP/2 by ALPN.
pub fn server_config(tls: &TlsSettings) -> Result<Arc<ServerConfig>, String> {
    let certs = CertificateDer::pem_slice_iter(&tls.cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("--tls-cert: {e}"))?;
    if certs.is_empty() {
        return Err("--tls-cert holds no certificate".to_owned());
    }
    let key = PrivateKeyDer::from_pem_slice(&tls.key_pem).map_err(|e| format!("--tls-key: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match &tls.client_ca_pem {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(ca) {
                let cert = cert.map_err(|e| format!("--tls-client-ca: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("--tls-client-ca: {e}"))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("--tls-client-ca: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("--tls-cert and --tls-key: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// The configuration in force, shared by the acceptor and the reloader.
#[derive(Clone)]
pub struct TlsState {
    current: Arc<RwLock<Arc<ServerConfig>>>,
}

impl TlsState {
    /// Starts with `config`.
    pub fn new(config: Arc<ServerConfig>) -> Self {
        Self {
            current: Arc::new(RwLock::new(config)),
        }
    }

    fn get(&self) -> Arc<ServerConfig> {
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn set(&self, config: Arc<ServerConfig>) {
        match self.current.write() {
            Ok(mut c) => *c = config,
            Err(poisoned) => *poisoned.into_inner() = config,
        }
    }

    /// The TLS connections of `incoming`: each handshake runs with the
    /// configuration in force when its connection was accepted. A failed
    /// or stalled handshake drops that connection only.
    pub fn accept<S, IO>(
        &self,
        incoming: S,
    ) -> impl Stream<Item = Result<TlsStream<IO>, std::io::Error>> + Send + 'static
    where
        S: Stream<Item = Result<IO, std::io::Error>> + Send + 'static,
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let state = self.clone();
        incoming
            .map(move |connection| {
                let acceptor = TlsAcceptor::from(state.get());
                async move {
                    let connection = connection?;
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(connection)).await
                    {
                        Ok(result) => result,
                        Err(_) => Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "TLS handshake timed out",
                        )),
                    }
                }
            })
            .buffer_unordered(CONCURRENT_HANDSHAKES)
            .filter_map(|handshake| async move {
                match handshake {
                    Ok(stream) => Some(Ok(stream)),
                    Err(e) => {
                        debug!("TLS handshake failed: {e}");
                        None
                    }
                }
            })
    }

    /// Reads the files of `tls` every [`RELOAD_CHECK`] and swaps in a new
    /// configuration when their contents changed and load.
    pub async fn reload_when_changed(self, mut tls: TlsSettings) {
        let mut ticker = tokio::time::interval(RELOAD_CHECK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            let fresh = match tls.read_again() {
                Ok(fresh) => fresh,
                Err(e) => {
                    error!("TLS: {e}; the certificates in force are kept");
                    continue;
                }
            };
            if fresh.same_contents(&tls) {
                continue;
            }
            match server_config(&fresh) {
                Ok(config) => {
                    self.set(config);
                    info!("TLS: certificate files changed; new connections use them");
                }
                Err(e) => error!("TLS: {e}; the certificates in force are kept"),
            }
            // Either way, the same broken contents are not reported again
            // every second.
            tls = fresh;
        }
    }
}
