//! The HTTP side of SCEP (RFC 8894 §4): `GET URL?operation=OP&message=M`, or `POST
//! URL?operation=PKIOperation` with the binary message when the server offers
//! `POSTPKIOperation`.
//!
//! Bounded like certd's other network I/O ([`crate::reminders::webhook`]): one deadline for connect,
//! TLS, request and answer; at most [`MAX_ANSWER`] bytes read; HTTPS with the system's roots
//! plus the `[[scep]]` block's `ca_file`, TLS 1.2 or later, the host name checked. Redirects
//! are not followed (a 3xx is an error naming where it pointed). HTTP/1.0 requests, so the
//! answer ends at the connection's close and carries no chunked encoding.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::{Duration, Instant};

/// The most of an answer read (head and body).
pub(crate) const MAX_ANSWER: usize = 1 << 20;

/// An answer with status 200.
#[derive(Debug)]
pub(crate) struct Answer {
    pub body: Vec<u8>,
}

/// One exchange with `url` under `timeout`; `Err` is the cause in words.
pub(crate) fn exchange(
    url: &url::Url,
    post: Option<&[u8]>,
    ca_file: Option<&Path>,
    timeout: Duration,
) -> Result<Answer, String> {
    let deadline = Instant::now() + timeout;
    let host = url
        .host_str()
        .ok_or("the URL has no host")?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = url.port_or_known_default().ok_or("the URL has no port")?;
    let addresses: Vec<_> = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    let left = |what: &str| -> Result<Duration, String> {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("timed out {what}"))
    };
    // Each address in turn (a name may resolve to ::1 and 127.0.0.1, one of them unused).
    let mut last = format!("{host} has no address");
    let mut connected = None;
    for address in &addresses {
        match TcpStream::connect_timeout(address, left("connecting")?) {
            Ok(tcp) => {
                connected = Some(tcp);
                break;
            }
            Err(e) => last = format!("cannot connect to {address}: {e}"),
        }
    }
    let tcp = connected.ok_or(last)?;
    let d = left("")?;
    tcp.set_read_timeout(Some(d))
        .and_then(|()| tcp.set_write_timeout(Some(d)))
        .map_err(|e| e.to_string())?;
    let mut path = url.path().to_string();
    if let Some(q) = url.query() {
        path.push('?');
        path.push_str(q);
    }
    let authority = match url.port() {
        Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_string(),
    };
    let agent = format!("certctl/{}", env!("CARGO_PKG_VERSION"));
    let mut request = match post {
        Some(body) => format!(
            "POST {path} HTTP/1.0\r\nHost: {authority}\r\nUser-Agent: {agent}\r\n\
             Content-Type: application/x-pki-message\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes(),
        None => format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\nUser-Agent: {agent}\r\n\r\n")
            .into_bytes(),
    };
    request.extend_from_slice(post.unwrap_or_default());
    let raw = match url.scheme() {
        "https" => {
            let connector = crate::reminders::webhook::connector(ca_file)?;
            let mut tls = connector
                .connect(&host, tcp)
                .map_err(|e| format!("TLS with {host}: {e}"))?;
            send(&mut tls, &request, deadline)?
        }
        _ => {
            let mut tcp = tcp;
            send(&mut tcp, &request, deadline)?
        }
    };
    parse(&raw)
}

/// Writes the request and reads the answer until the server closes, at most
/// [`MAX_ANSWER`] bytes and (each read bounded by the socket's timeout) no read started
/// after `deadline`: a server dripping bytes cannot hold certd past about twice the timeout.
fn send<S: Read + Write>(
    stream: &mut S,
    request: &[u8],
    deadline: Instant,
) -> Result<Vec<u8>, String> {
    stream
        .write_all(request)
        .and_then(|()| stream.flush())
        .map_err(|e| format!("sending the request: {e}"))?;
    let mut answer = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if Instant::now() >= deadline {
            return Err("timed out reading the answer".into());
        }
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("reading the answer: {e}")),
        }
        if answer.len() > MAX_ANSWER {
            return Err(format!(
                "the answer is larger than {} KiB",
                MAX_ANSWER / 1024
            ));
        }
    }
    Ok(answer)
}

/// The status, Content-Type and body of a raw HTTP answer; non-200 is an error.
pub(crate) fn parse(raw: &[u8]) -> Result<Answer, String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("not an HTTP answer (no end of head)")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let body = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .strip_prefix("HTTP/")
        .and_then(|s| s.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            format!(
                "not an HTTP answer: {:?}",
                crate::inventory::view::printable(
                    &status_line.chars().take(80).collect::<String>()
                )
            )
        })?;
    let header = |name: &str| {
        head.split("\r\n").skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    if (300..400).contains(&status) {
        return Err(format!(
            "the server redirects ({status}) to {}; certd follows no redirects: put the final URL in `url`",
            crate::inventory::view::printable(&header("location").unwrap_or_default())
        ));
    }
    if status != 200 {
        let excerpt: String = String::from_utf8_lossy(body).chars().take(200).collect();
        return Err(format!(
            "the server answered {} {}",
            status_line.split(' ').skip(1).collect::<Vec<_>>().join(" "),
            crate::inventory::view::printable(excerpt.trim())
        ));
    }
    if header("transfer-encoding").is_some_and(|t| !t.eq_ignore_ascii_case("identity")) {
        return Err("the server sent a transfer encoding to an HTTP/1.0 request".into());
    }
    let body = match header("content-length").and_then(|l| l.parse::<usize>().ok()) {
        Some(n) if n <= body.len() => &body[..n],
        Some(n) => {
            return Err(format!(
                "the answer ended after {} of {n} bytes",
                body.len()
            ))
        }
        None => body,
    };
    Ok(Answer {
        body: body.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers() {
        let a = parse(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nabcdef",
        )
        .unwrap();
        assert_eq!(a.body, b"abc");
        let e =
            parse(b"HTTP/1.1 302 Found\r\nLocation: http://evil.example/x\r\n\r\n").unwrap_err();
        assert!(
            e.contains("evil.example") && e.contains("no redirects"),
            "{e}"
        );
        let e = parse(b"HTTP/1.1 500 Oops\r\n\r\nbroken").unwrap_err();
        assert!(e.contains("500 Oops broken"), "{e}");
        let e = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc").unwrap_err();
        assert!(e.contains("3 of 10"), "{e}");
        assert!(parse(b"garbage").is_err());
    }

    /// A server on loopback that answers every connection with `answer` (or never, when
    /// `None`), keeping the connection open for `hold`.
    fn server(answer: Option<Vec<u8>>, hold: Duration) -> url::Url {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url =
            url::Url::parse(&format!("http://{}/scep", listener.local_addr().unwrap())).unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf);
                if let Some(a) = &answer {
                    let _ = stream.write_all(a);
                }
                std::thread::sleep(hold);
            }
        });
        url
    }

    #[test]
    fn every_exchange_is_bounded() {
        // A server that never answers: the deadline ends the wait.
        let url = server(None, Duration::from_secs(30));
        let e = exchange(&url, None, None, Duration::from_millis(500)).unwrap_err();
        assert!(
            e.contains("reading the answer") || e.contains("timed out"),
            "{e}"
        );
        // An endless answer: cut at MAX_ANSWER.
        let mut huge = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
        huge.resize(MAX_ANSWER + 4096, b'x');
        let url = server(Some(huge), Duration::from_secs(5));
        let e = exchange(&url, None, None, Duration::from_secs(20)).unwrap_err();
        assert!(e.contains("larger than 1024 KiB"), "{e}");
        // Nobody listening.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = url::Url::parse(&format!("http://127.0.0.1:{port}/scep")).unwrap();
        let e = exchange(&url, None, None, Duration::from_secs(5)).unwrap_err();
        assert!(e.contains("cannot connect"), "{e}");
    }

    #[test]
    fn https_trusts_the_ca_file() {
        use openssl::ssl::{SslAcceptor, SslMethod};
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, cert.pem()).unwrap();
        let mut acceptor = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
        acceptor
            .set_private_key(
                &openssl::pkey::PKey::private_key_from_pem(key.serialize_pem().as_bytes()).unwrap(),
            )
            .unwrap();
        acceptor
            .set_certificate(&openssl::x509::X509::from_der(cert.der()).unwrap())
            .unwrap();
        let acceptor = acceptor.build();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                if let Ok(mut tls) = acceptor.accept(stream) {
                    let mut buf = [0u8; 4096];
                    let _ = tls.read(&mut buf);
                    let _ = tls.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ncaps");
                    let _ = tls.shutdown();
                }
            }
        });
        let url = url::Url::parse(&format!("https://localhost:{port}/scep")).unwrap();
        let answer = exchange(&url, None, Some(&ca_file), Duration::from_secs(10)).unwrap();
        assert_eq!(answer.body, b"caps");
        // Without the CA file the server's certificate is not trusted.
        let e = exchange(&url, None, None, Duration::from_secs(10)).unwrap_err();
        assert!(e.contains("TLS with localhost"), "{e}");
    }
}
