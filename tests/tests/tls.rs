//! TLS and mTLS through a real server (issue 12, item 3), with
//! certificates made by `rcgen`: an `https://` client that trusts the CA
//! is served, one that does not (or speaks clear text) is not; with
//! `--tls-client-ca` only a client presenting a certificate the CA signed
//! is served. Client certificates count as authentication for the
//! "no open door" rule.

use iadb::DatabaseInterface;
use iadb_client::{RemoteDatabase, RetryPolicy, TlsOptions};
use iadb_tests::{
    certs::{self, TestCerts},
    harness::{TestServer, server_binary},
};
use std::{
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn https(server: &TestServer) -> String {
    server.endpoint.replacen("http://", "https://", 1)
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).expect("read PEM")
}

/// Whether a client with `tls` at `endpoint` gets an answer to a query.
async fn served(endpoint: &str, tls: TlsOptions) -> Result<(), String> {
    let db = RemoteDatabase::new(endpoint)
        .with_tls(tls)
        .with_retry(RetryPolicy::none())
        .with_connect_timeout(Duration::from_secs(5))
        .with_timeout(Duration::from_secs(5));
    db.connect().await.map_err(|e| e.to_string())?;
    db.fetch_all("SELECT 1 AS one", &[])
        .await
        .map(|rows| assert_eq!(rows.len(), 1))
        .map_err(|e| e.to_string())
}

fn trusting(certs: &TestCerts) -> TlsOptions {
    TlsOptions {
        ca_pem: Some(read(&certs.ca)),
        client: None,
    }
}

fn presenting(certs: &TestCerts, of: &TestCerts) -> TlsOptions {
    TlsOptions {
        ca_pem: Some(read(&certs.ca)),
        client: Some((read(&of.client_cert), read(&of.client_key))),
    }
}

#[tokio::test]
async fn tls_serves_clients_that_trust_its_ca_only() {
    let dir = tempfile::tempdir().expect("temp dir");
    let good = certs::make(dir.path(), "good");
    let other = certs::make(dir.path(), "other");
    let server = TestServer::start(&[
        "--tls-cert",
        path(&good.server_cert),
        "--tls-key",
        path(&good.server_key),
    ]);
    let endpoint = https(&server);
    served(&endpoint, trusting(&good))
        .await
        .expect("a client trusting the CA");
    // The public roots do not know the test CA; another CA is not it.
    assert!(served(&endpoint, TlsOptions::default()).await.is_err());
    assert!(served(&endpoint, trusting(&other)).await.is_err());
    // Clear text to a TLS port is not served.
    assert!(
        served(&server.endpoint, TlsOptions::default())
            .await
            .is_err()
    );
    // TLS options with an http:// address are refused, not ignored.
    let err = served(&server.endpoint, trusting(&good))
        .await
        .expect_err("http:// with a CA");
    assert!(err.contains("https://"), "{err}");
    // Standard health over TLS too.
    let channel = tonic::transport::Endpoint::from_shared(endpoint)
        .expect("endpoint")
        .tls_config(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(read(&good.ca))),
        )
        .expect("tls config")
        .connect()
        .await
        .expect("connect");
    let status = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health over TLS");
    assert_eq!(
        status.into_inner().status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
}

#[tokio::test]
async fn mtls_serves_clients_with_a_certificate_its_ca_signed_only() {
    let dir = tempfile::tempdir().expect("temp dir");
    let good = certs::make(dir.path(), "good");
    let other = certs::make(dir.path(), "other");
    let server = TestServer::start(&[
        "--tls-cert",
        path(&good.server_cert),
        "--tls-key",
        path(&good.server_key),
        "--tls-client-ca",
        path(&good.ca),
    ]);
    let endpoint = https(&server);
    served(&endpoint, presenting(&good, &good))
        .await
        .expect("a client with a certificate the CA signed");
    assert!(
        served(&endpoint, trusting(&good)).await.is_err(),
        "a client without a certificate was served"
    );
    assert!(
        served(&endpoint, presenting(&good, &other)).await.is_err(),
        "a client with another CA's certificate was served"
    );
}

/// Starts the server binary with `args` and returns its first stdout line
/// (it is then killed), or its stderr when it exits first.
fn start_line(args: &[&str]) -> Result<String, String> {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite:///{}", dir.path().join("a.db").display());
    let mut child = Command::new(server_binary())
        .args(["--database-url", &url])
        .args(args)
        .current_dir(dir.path())
        .env_remove("DATABASE_URL")
        .env_remove("IADB_TOKENS_FILE")
        .env_remove("IADB_INSECURE_NO_AUTH")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn server");
    let mut line = String::new();
    let stdout = child.stdout.take().expect("stdout");
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)
        .expect("read stdout");
    let _ = child.kill();
    let out = child.wait_with_output().expect("wait");
    if line.is_empty() {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    } else {
        Ok(line)
    }
}

#[test]
fn client_certificates_open_a_non_loopback_address_and_bad_files_refuse_the_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let good = certs::make(dir.path(), "good");
    let tls = [
        "--tls-cert",
        path(&good.server_cert),
        "--tls-key",
        path(&good.server_key),
    ];
    // TLS alone authenticates nobody: still refused without tokens.
    let refused = start_line(&[&["--listen", "0.0.0.0:0"][..], &tls].concat())
        .expect_err("TLS without tokens on 0.0.0.0");
    assert!(refused.contains("without tokens"), "{refused}");
    // With client certificates required, it serves.
    let line = start_line(
        &[
            &["--listen", "0.0.0.0:0"][..],
            &tls,
            &["--tls-client-ca", path(&good.ca)],
        ]
        .concat(),
    )
    .expect("mTLS on 0.0.0.0");
    assert!(
        line.starts_with("iadb-server listening on 0.0.0.0:"),
        "{line}"
    );
    // A key that is not the certificate's, a missing key, a file that is
    // not PEM: the start is refused with a message naming TLS.
    let mismatched = start_line(&[
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        path(&good.server_cert),
        "--tls-key",
        path(&good.client_key),
    ]);
    let err = mismatched.expect_err("a key of another certificate");
    assert!(err.contains("TLS"), "{err}");
    let err = start_line(&[
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        path(&good.server_cert),
    ])
    .expect_err("no key");
    assert!(err.contains("--tls-key"), "{err}");
    let err = start_line(&[
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        path(&good.server_cert),
        "--tls-key",
        path(&dir.path().join("nope.pem")),
    ])
    .expect_err("a missing key file");
    assert!(err.contains("nope.pem"), "{err}");
}

/// Certificates are read again when their files change: new connections
/// use the new ones; files that do not load keep the ones in force.
#[tokio::test]
async fn certificates_are_reloaded_when_their_files_change() {
    let dir = tempfile::tempdir().expect("temp dir");
    let one = certs::make(dir.path(), "one");
    let two = certs::make(dir.path(), "two");
    let cert = dir.path().join("live-cert.pem");
    let key = dir.path().join("live-key.pem");
    let install = |set: &TestCerts| {
        std::fs::write(&key, read(&set.server_key)).expect("write key");
        std::fs::write(&cert, read(&set.server_cert)).expect("write cert");
    };
    install(&one);
    let server = TestServer::start(&["--tls-cert", path(&cert), "--tls-key", path(&key)]);
    let endpoint = https(&server);
    served(&endpoint, trusting(&one))
        .await
        .expect("first certificate");
    assert!(served(&endpoint, trusting(&two)).await.is_err());
    install(&two);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while served(&endpoint, trusting(&two)).await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the new certificate was not used within 15 s:\n{}",
            server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served(&endpoint, trusting(&one)).await.is_err());
    // A file that does not load: logged, and the certificate in force stays.
    std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nnot base64\n").expect("write");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !server
        .log_text()
        .contains("the certificates in force are kept")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    served(&endpoint, trusting(&two))
        .await
        .expect("the certificate in force after a bad file");
}

/// With mTLS, a tokens file entry may name a client certificate (by the
/// SHA-256 of its DER) instead of a token: a client presenting it and no
/// token gets that entry's name and scope. A bearer token still wins.
#[tokio::test]
async fn a_client_certificate_can_stand_for_a_token() {
    use iadb::ErrorKind;
    let dir = tempfile::tempdir().expect("temp dir");
    let good = certs::make(dir.path(), "good");
    let tokens = dir.path().join("tokens.toml");
    let writer = "iadb_tls_writer_token_0007";
    let writer_sha = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(writer.as_bytes()))
    };
    std::fs::write(
        &tokens,
        format!(
            "[[token]]\nname = \"cert-reader\"\nclient_cert_sha256 = \"{}\"\nscope = \"read\"\ndatabases = [\"*\"]\n\n[[token]]\nname = \"writer\"\nsha256 = \"{writer_sha}\"\nscope = \"write\"\ndatabases = [\"*\"]\n",
            good.client_sha256
        ),
    )
    .expect("write tokens");
    let server = TestServer::start(&[
        "--tls-cert",
        path(&good.server_cert),
        "--tls-key",
        path(&good.server_key),
        "--tls-client-ca",
        path(&good.ca),
        "--tokens-file",
        path(&tokens),
    ]);
    let endpoint = https(&server);
    let by_certificate = RemoteDatabase::new(endpoint.clone())
        .with_tls(presenting(&good, &good))
        .with_retry(RetryPolicy::none());
    by_certificate.connect().await.expect("connect");
    assert_eq!(
        by_certificate
            .fetch_all("SELECT 1 AS one", &[])
            .await
            .expect("read by certificate")
            .len(),
        1
    );
    let err = by_certificate
        .execute("CREATE TABLE t (id INTEGER)", &[])
        .await
        .expect_err("the certificate's scope is read");
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    assert!(err.message().contains("cert-reader"), "{err}");
    let with_token = RemoteDatabase::new(endpoint)
        .with_tls(presenting(&good, &good))
        .with_token(writer)
        .with_retry(RetryPolicy::none());
    with_token.connect().await.expect("connect");
    with_token
        .execute("CREATE TABLE t (id INTEGER)", &[])
        .await
        .expect("the token's scope");
    // Without an entry for it, a certificate is no token.
    std::fs::write(
        &tokens,
        format!(
            "[[token]]\nname = \"writer\"\nsha256 = \"{writer_sha}\"\nscope = \"write\"\ndatabases = [\"*\"]\n"
        ),
    )
    .expect("write tokens");
    let status = Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let err = by_certificate.fetch_all("SELECT 1 AS one", &[]).await.err();
        if err.as_ref().map(|e| e.kind()) == Some(ErrorKind::Unauthenticated) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{err:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
