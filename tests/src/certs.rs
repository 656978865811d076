//! Certificates for the TLS tests, made with `rcgen`: a CA, a server
//! certificate for `localhost` and 127.0.0.1 signed by it, and a client
//! certificate signed by it; written as PEM files into a folder.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use std::path::{Path, PathBuf};

/// PEM files in one folder.
pub struct TestCerts {
    /// The CA's certificate.
    pub ca: PathBuf,
    /// The server's certificate and key.
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// A client certificate (CN `iadb-test-client`) and its key.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// The hex SHA-256 of the client certificate's DER (what a tokens
    /// file's `client_cert_sha256` holds).
    pub client_sha256: String,
}

/// A CA and the certificates it signs, written under `dir`. `name` makes
/// the CA's subject distinct, so two sets do not trust each other.
pub fn make(dir: &Path, name: &str) -> TestCerts {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("iadb test CA {name}"));
    let ca = ca_params.self_signed(&ca_key).expect("CA certificate");

    let server_key = KeyPair::generate().expect("server key");
    let mut server_params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("server params");
    server_params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let server = server_params
        .signed_by(&server_key, &ca, &ca_key)
        .expect("server certificate");

    let client_key = KeyPair::generate().expect("client key");
    let mut client_params = CertificateParams::new(Vec::<String>::new()).expect("client params");
    client_params
        .distinguished_name
        .push(DnType::CommonName, "iadb-test-client");
    let client = client_params
        .signed_by(&client_key, &ca, &ca_key)
        .expect("client certificate");

    let write = |file: &str, text: String| {
        let path = dir.join(format!("{name}-{file}"));
        std::fs::write(&path, text).expect("write PEM");
        path
    };
    TestCerts {
        ca: write("ca.pem", ca.pem()),
        server_cert: write("server.pem", server.pem()),
        server_key: write("server-key.pem", server_key.serialize_pem()),
        client_cert: write("client.pem", client.pem()),
        client_key: write("client-key.pem", client_key.serialize_pem()),
        client_sha256: {
            use sha2::Digest as _;
            hex::encode(sha2::Sha256::digest(client.der()))
        },
    }
}
