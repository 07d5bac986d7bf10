//! An axum app served over TLS on 127.0.0.1, as the real AI providers serve
//! theirs: HTTP/2 when the client offers it (ALPN `h2`), else HTTP/1.1. Its
//! certificate, for `localhost`, is issued by a CA of its own, whose PEM is
//! in [`TlsServer::ca_file`]: a Ferry process trusts it through
//! `FERRY_EXTRA_CA_FILE`, so certificates stay verified.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A running TLS server; it stops when dropped.
pub struct TlsServer {
    pub addr: SocketAddr,
    /// The issuing CA's certificate (PEM), in a file of its own.
    pub ca_file: tempfile::NamedTempFile,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsServer {
    /// Serves `app` on a free port. `max_streams`: the HTTP/2 streams one
    /// connection may carry at once (SETTINGS_MAX_CONCURRENT_STREAMS; hyper
    /// advertises 200 unless told).
    pub async fn start(app: Router, max_streams: u32) -> Self {
        let (config, ca_pem) = server_config(&["localhost"]);
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counted = accepted.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                counted.fetch_add(1, Ordering::Relaxed);
                let (acceptor, app) = (acceptor.clone(), app.clone());
                tokio::spawn(async move {
                    // A client that refuses the certificate ends the handshake.
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut builder = auto::Builder::new(TokioExecutor::new());
                    builder.http2().max_concurrent_streams(max_streams);
                    builder
                        .serve_connection(TokioIo::new(tls), TowerToHyperService::new(app))
                        .await
                        .ok();
                });
            }
        });
        let ca_file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(ca_file.path(), ca_pem).unwrap();
        Self {
            addr,
            ca_file,
            accepted,
            task,
        }
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }

    /// `https://localhost:<port>`: the name the certificate is for.
    pub fn origin(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }
}

/// A rustls config with a certificate for `names` from a fresh CA, offering
/// `h2` and `http/1.1` (ALPN); and the CA's PEM.
pub fn server_config(names: &[&str]) -> (ServerConfig, String) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "Ferry test provider CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let leaf = CertificateParams::new(names)
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(leaf.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    (config, ca_cert.pem())
}
