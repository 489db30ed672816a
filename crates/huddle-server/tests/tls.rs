//! HTTPS with the generated certificate: a client that trusts exactly that certificate connects.

mod common;

use std::sync::Arc;

use common::{Client, TestServer};
use huddle_server::{Config, TlsSource};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

#[tokio::test]
async fn self_signed_certificate_is_generated_and_served() {
    let dir = std::env::temp_dir().join(format!("huddle-tls-it-{}", std::process::id()));
    let mut config = Config::plain("127.0.0.1:0".parse().unwrap());
    config.tls = TlsSource::SelfSigned { dir: dir.clone() };
    let server = TestServer::with(config).await;

    let cert = CertificateDer::from_pem_file(dir.join("cert.pem")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let url = format!("wss://localhost:{}/ws", server.addr.port());
    let connector = tokio_tungstenite::Connector::Rustls(Arc::new(tls));
    let (ws, _) =
        tokio_tungstenite::connect_async_tls_with_config(url, None, false, Some(connector))
            .await
            .expect("wss handshake with the generated certificate");
    let mut client = Client { ws };
    let welcome = client.join("secure", "Tess").await;
    assert_eq!(welcome.room, "secure");

    server.shutdown().await.unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn plain_http_on_the_https_port_is_redirected_to_https() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = std::env::temp_dir().join(format!("huddle-tls-redirect-{}", std::process::id()));
    let mut config = Config::plain("127.0.0.1:0".parse().unwrap());
    config.tls = TlsSource::SelfSigned { dir: dir.clone() };
    let server = TestServer::with(config).await;
    let port = server.addr.port();
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let request = format!("GET /r/team?name=Ann HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 308 "), "{response}");
    assert!(
        response.contains(&format!(
            "\r\nLocation: https://localhost:{port}/r/team?name=Ann\r\n"
        )),
        "{response}"
    );
    server.shutdown().await.unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}
