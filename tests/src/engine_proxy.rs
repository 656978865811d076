//! A TCP proxy in front of an engine, to take it away and bring it back
//! without touching the engine other tests use, and the standard health
//! checks that watch what the server makes of it.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};
use tokio::{
    net::{TcpListener, TcpSocket, TcpStream},
    task::{JoinHandle, JoinSet},
};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// Forwards loopback connections on its port to `upstream`.
pub struct EngineProxy {
    /// The loopback port it listens on.
    pub port: u16,
    upstream: SocketAddr,
    task: Option<JoinHandle<()>>,
}

impl EngineProxy {
    /// Listens on `port` (0: any free port) and forwards to `upstream`.
    pub fn start(port: u16, upstream: SocketAddr) -> Self {
        let mut proxy = Self {
            port,
            upstream,
            task: None,
        };
        proxy.resume();
        proxy
    }

    /// Listens again (on the same port once it has one) and forwards.
    pub fn resume(&mut self) {
        let socket = TcpSocket::new_v4().expect("socket");
        socket.set_reuseaddr(true).expect("SO_REUSEADDR");
        socket
            .bind(SocketAddr::from(([127, 0, 0, 1], self.port)))
            .expect("bind proxy port");
        let listener: TcpListener = socket.listen(64).expect("listen");
        self.port = listener.local_addr().expect("proxy address").port();
        let upstream = self.upstream;
        self.task = Some(tokio::spawn(async move {
            // Dropping the set (when this task is aborted) aborts every
            // connection: the engine is gone for the server.
            let mut connections = JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                connections.spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        }));
    }

    /// Stops listening and cuts every connection.
    pub async fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for EngineProxy {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The standard health status of `service`, or `None` when the check fails.
pub async fn health_status(
    health: &mut HealthClient<tonic::transport::Channel>,
    service: &str,
) -> Option<ServingStatus> {
    health
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .ok()
        .map(|r| r.into_inner().status())
}

/// Polls (every 100 ms, at most `limit`) until `service` reports `want`;
/// returns how long it took.
pub async fn wait_for(
    health: &mut HealthClient<tonic::transport::Channel>,
    service: &str,
    want: ServingStatus,
    limit: Duration,
) -> Duration {
    let started = Instant::now();
    loop {
        let status = health_status(health, service).await;
        if status == Some(want) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "{service:?} did not become {want:?} within {limit:?} (last: {status:?})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
