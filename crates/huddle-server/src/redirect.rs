//! Plain HTTP on the HTTPS port (someone typed `http://host:8443/r/room`): the answer is a
//! redirect to the same URL over HTTPS, not bytes a browser shows as an invalid response.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// A request head longer than this is not worth redirecting.
const MAX_HEAD: usize = 8 * 1024;
/// The time a client has to send its first byte, and then its request head.
const WAIT: Duration = Duration::from_secs(10);

/// Whether the connection starts with a plain HTTP request rather than a TLS handshake (whose
/// first byte is 0x16): HTTP methods are upper-case ASCII letters.
pub async fn is_plain_http(tcp: &TcpStream) -> bool {
    let mut first = [0u8; 1];
    matches!(
        tokio::time::timeout(WAIT, tcp.peek(&mut first)).await,
        Ok(Ok(1)) if first[0].is_ascii_uppercase()
    )
}

/// Reads the request head and answers `308` to its URL over HTTPS (the Host it names, else the
/// address it reached), then closes. A head that does not parse gets a `400`.
pub async fn redirect<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, local: SocketAddr) {
    let Ok(Some(head)) = tokio::time::timeout(WAIT, read_head(&mut stream)).await else {
        return;
    };
    let response = match location(&head, local) {
        Some(url) => {
            let body = format!("This server speaks HTTPS: {url}\n");
            format!(
                "HTTP/1.1 308 Permanent Redirect\r\nLocation: {url}\r\n\
                 Content-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
        }
        None => "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into(),
    };
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// The head up to its blank line, or None if the client stops or sends too much first.
async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await.ok().filter(|n| *n > 0)?;
        head.extend_from_slice(&buf[..n]);
        if head.len() > MAX_HEAD {
            return None;
        }
    }
    Some(head)
}

/// `https://HOST/TARGET` of a request head, with only the characters a host and an origin-form
/// target may carry (nothing that could split the response).
fn location(head: &[u8], local: SocketAddr) -> Option<String> {
    let head = std::str::from_utf8(head).ok()?;
    let mut lines = head.split("\r\n");
    let mut request = lines.next()?.split(' ');
    let (_method, target) = (request.next()?, request.next()?);
    let printable = |s: &str| s.bytes().all(|b| b.is_ascii_graphic());
    if !target.starts_with('/') || !printable(target) {
        return None;
    }
    let host = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("host"))
        .map(|(_, value)| value.trim().to_owned())
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        })
        .unwrap_or_else(|| local.to_string());
    Some(format!("https://{host}{target}"))
}

#[cfg(test)]
mod tests {
    use super::location;

    #[test]
    fn the_location_is_the_same_url_over_https() {
        let local = "10.0.0.1:8443".parse().unwrap();
        let at = |head: &str| location(head.as_bytes(), local);
        assert_eq!(
            at("GET /r/team?x=1 HTTP/1.1\r\nHost: meet.example.org:8443\r\n\r\n").as_deref(),
            Some("https://meet.example.org:8443/r/team?x=1")
        );
        assert_eq!(
            at("GET / HTTP/1.0\r\n\r\n").as_deref(),
            Some("https://10.0.0.1:8443/"),
            "no Host: the address it reached"
        );
        assert_eq!(
            at("GET / HTTP/1.1\r\nhost: [::1]:8443\r\n\r\n").as_deref(),
            Some("https://[::1]:8443/")
        );
        // A Host that could inject a header is not used; a target that is not a path refuses.
        assert_eq!(
            at("GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n").as_deref(),
            Some("https://10.0.0.1:8443/")
        );
        assert_eq!(at("GET http://x/ HTTP/1.1\r\n\r\n"), None);
        assert_eq!(at("GET\r\n\r\n"), None);
    }
}
