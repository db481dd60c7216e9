//! The SMTP client the reminders go out through ([`crate::reminders::SmtpMailer`]): one session
//! with the `[smtp]` server, driven step by step (greeting, EHLO, STARTTLS, AUTH, MAIL FROM,
//! RCPT TO, DATA, the message, QUIT), with every read bounded, because the server is not
//! certctl's to trust:
//!
//! - **Replies are bounded** (RFC 5321 §4.5.3.1.5 allows 512 octets per reply line): a reply
//!   line may hold at most [`MAX_LINE`] bytes, a reply at most [`MAX_LINES`] lines and
//!   [`MAX_REPLY`] bytes. Past that, the session ends with "reply too long"; at most
//!   [`MAX_LINE`] bytes plus one read are ever buffered.
//! - **Time is bounded twice**: every socket read and write waits at most `smtp.timeout`
//!   (a server that says nothing), and the whole session — connect, TLS handshake and the
//!   whole dialogue — ends by one deadline, [`session_limit`] (`DEADLINE_FACTOR` ×
//!   `smtp.timeout`), however slowly the server trickles bytes.
//!
//! The protocol pieces that need no I/O come from lettre (commands, reply parsing, EHLO
//! keywords, AUTH mechanisms); TLS is OpenSSL, set up by [`crate::mail::tls`].

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
use lettre::transport::smtp::commands::{Auth, Ehlo, Quit, Starttls};
use lettre::transport::smtp::extension::{ClientId, Extension, ServerInfo};
use lettre::transport::smtp::response::Response;
use openssl::ssl::{HandshakeError, SslConnector, SslStream};
use openssl::x509::X509VerifyResult;

/// The longest reply line accepted, CR LF included (4 × RFC 5321's 512 octets).
pub(crate) const MAX_LINE: usize = 2048;
/// The most lines one reply may have.
pub(crate) const MAX_LINES: usize = 64;
/// The most bytes one reply may have.
pub(crate) const MAX_REPLY: usize = 64 * 1024;
/// A whole session may last this many times `smtp.timeout`.
pub(crate) const DEADLINE_FACTOR: u32 = 3;

/// The overall limit of one session with the per-wait `timeout`.
pub(crate) fn session_limit(timeout: Duration) -> Duration {
    timeout.saturating_mul(DEADLINE_FACTOR)
}

/// Why a session failed. Sentences for admins; the caller adds the server and recipient.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SmtpError {
    /// No TCP connection (name lookup, refused, unreachable, connect timeout).
    #[error("Connection error: {0}")]
    Connect(String),
    /// The TLS handshake failed (OpenSSL's reasons, and the certificate verification result).
    #[error("Connection error: {0}")]
    Tls(String),
    /// A read or write on the open connection failed; `silent`: nothing came within
    /// `smtp.timeout`.
    #[error("network error: {cause}")]
    Network { cause: String, silent: bool },
    /// The session ran past its overall deadline.
    #[error("timed out: the session was not over after {0} ({DEADLINE_FACTOR} × smtp.timeout); the server answers too slowly")]
    Deadline(String),
    /// A reply line or reply beyond [`MAX_LINE`], [`MAX_LINES`], [`MAX_REPLY`].
    #[error("reply too long: {0}")]
    TooLong(String),
    /// A reply that is not SMTP.
    #[error("response error: {0}")]
    Malformed(String),
    /// The server closed the connection before a reply was complete.
    #[error("response error: incomplete response (the server closed the connection)")]
    Closed,
    /// The server answered 4xx or 5xx.
    #[error("{} error ({code}): {text}", if *.code >= 500 { "permanent" } else { "transient" })]
    Reply { code: u16, text: String },
    /// The server lacks what the configuration needs (STARTTLS).
    #[error("{0}")]
    Unsupported(String),
    /// Logging in could not be done on our side: no AUTH mechanism in common, or an
    /// exchange that does not follow the mechanism.
    #[error("{0}")]
    Auth(String),
}

impl SmtpError {
    /// Whether logging in failed: the server refused the credentials or wants another way
    /// to log in (RFC 4954's 530, 534, 535, 538), or no AUTH exchange could be made.
    pub(crate) fn is_auth_failure(&self) -> bool {
        matches!(self, SmtpError::Auth(_)) || matches!(self.code(), Some(530 | 534 | 535 | 538))
    }

    /// The server answered with a 4xx code.
    pub(crate) fn is_transient(&self) -> bool {
        matches!(self, SmtpError::Reply { code, .. } if (400..500).contains(code))
    }

    /// The server answered with a 5xx code.
    pub(crate) fn is_permanent(&self) -> bool {
        matches!(self, SmtpError::Reply { code, .. } if *code >= 500)
    }

    /// The reply code of a refusal.
    pub(crate) fn code(&self) -> Option<u16> {
        match self {
            SmtpError::Reply { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Nothing came within `smtp.timeout` on an open connection.
    pub(crate) fn is_silent(&self) -> bool {
        matches!(self, SmtpError::Network { silent: true, .. })
    }
}

/// A TCP stream whose every read and write waits at most `timeout`, and never past
/// `deadline`.
#[derive(Debug)]
struct Timed {
    tcp: TcpStream,
    timeout: Duration,
    deadline: Instant,
}

impl Timed {
    fn bound(&self) -> io::Result<Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "session deadline"));
        }
        Ok(left.min(self.timeout).max(Duration::from_millis(1)))
    }
}

impl Read for Timed {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let bound = self.bound()?;
        self.tcp.set_read_timeout(Some(bound))?;
        self.tcp.read(buf)
    }
}

impl Write for Timed {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let bound = self.bound()?;
        self.tcp.set_write_timeout(Some(bound))?;
        self.tcp.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.tcp.flush()
    }
}

#[derive(Debug)]
enum Stream {
    Plain(Timed),
    Tls(Box<SslStream<Timed>>),
}

impl Stream {
    fn timed(&self) -> &Timed {
        match self {
            Stream::Plain(t) => t,
            Stream::Tls(s) => s.get_ref(),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(t) => t.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(t) => t.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(t) => t.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// One SMTP session. Dropping it closes the connection without QUIT.
#[derive(Debug)]
pub(crate) struct Session {
    /// `None` only while the connection is being upgraded to TLS.
    stream: Option<Stream>,
    /// Bytes received and not yet consumed (less than [`MAX_LINE`] plus one read).
    pending: Vec<u8>,
    /// The overall limit, for messages.
    limit: Duration,
    info: ServerInfo,
    /// A network error or a malformed reply: no QUIT is tried any more.
    broken: bool,
}

impl Session {
    /// Connects to `host:port` (every resolved address, each connect waiting at most
    /// `timeout`), with `implicit_tls` wraps the connection in TLS at once, reads the
    /// greeting and sends EHLO. The session's deadline starts now.
    pub(crate) fn connect(
        host: &str,
        port: u16,
        timeout: Duration,
        implicit_tls: Option<&SslConnector>,
        hello: &ClientId,
    ) -> Result<Session, SmtpError> {
        let limit = session_limit(timeout);
        let deadline = Instant::now() + limit;
        let addrs = (host, port)
            .to_socket_addrs()
            .map_err(|e| SmtpError::Connect(e.to_string()))?;
        let mut last = None;
        let mut tcp = None;
        for addr in addrs {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match TcpStream::connect_timeout(&addr, timeout.min(left)) {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let tcp = tcp.ok_or_else(|| {
            SmtpError::Connect(last.map_or_else(
                || "could not resolve to any address".to_string(),
                |e| e.to_string(),
            ))
        })?;
        let timed = Timed {
            tcp,
            timeout,
            deadline,
        };
        let mut session = Session {
            stream: Some(Stream::Plain(timed)),
            pending: Vec::new(),
            limit,
            info: ServerInfo::default(),
            broken: false,
        };
        if let Some(connector) = implicit_tls {
            session.upgrade(connector, host)?;
        }
        let greeting = session.read_reply()?;
        session.positive(greeting)?;
        session.ehlo(hello)?;
        Ok(session)
    }

    /// What the server's EHLO answer offered.
    pub(crate) fn server_info(&self) -> &ServerInfo {
        &self.info
    }

    /// STARTTLS, the handshake (the certificate checked for `host`), EHLO again.
    pub(crate) fn starttls(
        &mut self,
        connector: &SslConnector,
        host: &str,
        hello: &ClientId,
    ) -> Result<(), SmtpError> {
        if !self.info.supports_feature(Extension::StartTls) {
            return Err(SmtpError::Unsupported(
                "STARTTLS is not supported on this server".into(),
            ));
        }
        self.command(&Starttls.to_string())?;
        if !self.pending.is_empty() {
            self.broken = true;
            return Err(SmtpError::Malformed(
                "the server sent more after its STARTTLS answer".into(),
            ));
        }
        self.upgrade(connector, host)?;
        self.ehlo(hello)
    }

    /// AUTH with the first of PLAIN, LOGIN the server offers.
    pub(crate) fn auth(&mut self, credentials: &Credentials) -> Result<(), SmtpError> {
        let mechanism = self
            .info
            .get_auth_mechanism(DEFAULT_MECHANISMS)
            .ok_or_else(|| {
                SmtpError::Auth("No compatible authentication mechanism was found".into())
            })?;
        let auth = |r: Result<Auth, lettre::transport::smtp::Error>| {
            r.map(|a| a.to_string())
                .map_err(|e| SmtpError::Auth(format!("response error: authentication: {e}")))
        };
        let mut response = self.command(&auth(Auth::new(mechanism, credentials.clone(), None))?)?;
        for _ in 0..10 {
            if !response.has_code(334) {
                return Ok(());
            }
            response = self.command(&auth(Auth::new_from_response(
                mechanism,
                credentials.clone(),
                &response,
            ))?)?;
        }
        Err(SmtpError::Auth(
            "response error: authentication: unexpected number of challenges".into(),
        ))
    }

    /// Sends `command` (with its CR LF) and reads the reply; a 4xx or 5xx is an error.
    pub(crate) fn command(&mut self, command: &str) -> Result<Response, SmtpError> {
        self.write(command.as_bytes())?;
        let reply = self.read_reply()?;
        self.positive(reply)
    }

    /// Sends the message after DATA's 354 (dot-stuffed, ended by `.`) and reads the reply.
    pub(crate) fn message(&mut self, raw: &[u8]) -> Result<Response, SmtpError> {
        let mut out = Vec::with_capacity(raw.len() + raw.len() / 64 + 5);
        let mut line_start = true;
        for &b in raw {
            if line_start && b == b'.' {
                out.push(b'.');
            }
            out.push(b);
            line_start = b == b'\n';
        }
        if !out.ends_with(b"\r\n") {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        self.write(&out)?;
        let reply = self.read_reply()?;
        self.positive(reply)
    }

    /// QUIT and close.
    pub(crate) fn quit(&mut self) -> Result<Response, SmtpError> {
        self.command(&Quit.to_string())
    }

    /// QUIT (unless the connection is broken), then close, whatever happens.
    pub(crate) fn abort(&mut self) {
        if !self.broken {
            self.broken = true;
            let _ = self.command(&Quit.to_string());
        }
        if let Some(s) = &self.stream {
            let _ = s.timed().tcp.shutdown(std::net::Shutdown::Both);
        }
    }

    fn ehlo(&mut self, hello: &ClientId) -> Result<(), SmtpError> {
        let response = self.command(&Ehlo::new(hello.clone()).to_string())?;
        self.info = ServerInfo::from_response(&response)
            .map_err(|e| SmtpError::Malformed(format!("EHLO: {e}")))?;
        Ok(())
    }

    fn positive(&mut self, response: Response) -> Result<Response, SmtpError> {
        if response.is_positive() {
            return Ok(response);
        }
        Err(SmtpError::Reply {
            code: response.code().into(),
            text: response.message().collect::<Vec<_>>().join(" "),
        })
    }

    fn upgrade(&mut self, connector: &SslConnector, host: &str) -> Result<(), SmtpError> {
        let Some(Stream::Plain(timed)) = self.stream.take() else {
            return Err(SmtpError::Unsupported(
                "the connection is already encrypted".into(),
            ));
        };
        self.broken = true;
        let deadline = timed.deadline;
        let config = connector
            .configure()
            .map_err(|e| SmtpError::Tls(e.to_string()))?;
        match config.connect(host, timed) {
            Ok(tls) => {
                self.stream = Some(Stream::Tls(Box::new(tls)));
                self.broken = false;
                Ok(())
            }
            Err(e) if Instant::now() >= deadline => {
                drop(e);
                Err(self.deadline_error())
            }
            Err(HandshakeError::SetupFailure(e)) => Err(SmtpError::Tls(e.to_string())),
            Err(HandshakeError::Failure(mid)) | Err(HandshakeError::WouldBlock(mid)) => {
                if let Some(io) = mid.error().io_error() {
                    if matches!(
                        io.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) {
                        return Err(SmtpError::Tls(format!(
                            "no TLS handshake answer within {}",
                            crate::probe::fmt_duration(mid.get_ref().timeout)
                        )));
                    }
                }
                let mut cause = mid.error().to_string();
                let verify = mid.ssl().verify_result();
                if verify != X509VerifyResult::OK {
                    cause.push_str(&format!(" ({})", verify.error_string()));
                }
                Err(SmtpError::Tls(cause))
            }
        }
    }

    fn deadline_error(&self) -> SmtpError {
        SmtpError::Deadline(crate::probe::fmt_duration(self.limit))
    }

    fn io_error(&mut self, e: io::Error) -> SmtpError {
        self.broken = true;
        let past = self
            .stream
            .as_ref()
            .is_some_and(|s| Instant::now() >= s.timed().deadline);
        if past {
            return self.deadline_error();
        }
        let silent = matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        );
        let cause = match (&self.stream, silent) {
            (Some(s), true) => format!(
                "no answer within {}",
                crate::probe::fmt_duration(s.timed().timeout)
            ),
            _ => e.to_string(),
        };
        SmtpError::Network { cause, silent }
    }

    fn stream(&mut self) -> Result<&mut Stream, SmtpError> {
        self.stream.as_mut().ok_or(SmtpError::Closed)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), SmtpError> {
        let result = self
            .stream()?
            .write_all(bytes)
            .and_then(|()| self.stream.as_mut().map_or(Ok(()), |s| s.flush()));
        result.map_err(|e| self.io_error(e))
    }

    /// One reply (all its lines), bounded by [`MAX_LINES`] and [`MAX_REPLY`].
    fn read_reply(&mut self) -> Result<Response, SmtpError> {
        let mut text = String::new();
        for _ in 0..MAX_LINES {
            let line = self.read_line()?;
            if text.len() + line.len() > MAX_REPLY {
                self.broken = true;
                return Err(SmtpError::TooLong(format!(
                    "a reply of more than {MAX_REPLY} bytes"
                )));
            }
            let last = line.as_bytes().get(3) != Some(&b'-');
            text.push_str(&line);
            if last {
                return text.parse::<Response>().map_err(|e| {
                    self.broken = true;
                    SmtpError::Malformed(format!("{e} in `{}`", text.trim_end().escape_debug()))
                });
            }
        }
        self.broken = true;
        Err(SmtpError::TooLong(format!(
            "a reply of more than {MAX_LINES} lines"
        )))
    }

    /// One reply line, CR LF included, of at most [`MAX_LINE`] bytes.
    fn read_line(&mut self) -> Result<String, SmtpError> {
        loop {
            if let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
                if end + 1 > MAX_LINE {
                    break;
                }
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                let mut line = String::from_utf8_lossy(&line).into_owned();
                if !line.ends_with("\r\n") {
                    // A bare LF: accepted as the end of the line.
                    line.pop();
                    line.push_str("\r\n");
                }
                return Ok(line);
            }
            if self.pending.len() >= MAX_LINE {
                break;
            }
            let mut chunk = [0u8; 4096];
            let n = match self.stream()?.read(&mut chunk) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.io_error(e)),
            };
            if n == 0 {
                self.broken = true;
                return Err(SmtpError::Closed);
            }
            self.pending.extend_from_slice(&chunk[..n]);
        }
        self.broken = true;
        Err(SmtpError::TooLong(format!(
            "a reply line of more than {MAX_LINE} bytes"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_failures_are_known_by_code_not_by_words() {
        let reply = |code: u16, text: &str| SmtpError::Reply {
            code,
            text: text.into(),
        };
        for code in [530, 534, 535, 538] {
            assert!(reply(code, "5.7.8 no").is_auth_failure(), "{code}");
        }
        assert!(
            SmtpError::Auth("No compatible authentication mechanism was found".into())
                .is_auth_failure()
        );
        // A refusal that merely mentions the word is not a login failure.
        assert!(!reply(550, "mailbox unavailable (authentication realm: x)").is_auth_failure());
        assert!(!SmtpError::Closed.is_auth_failure());
    }
    use std::net::TcpListener;

    /// A server on loopback that writes `bytes` (then waits for the client to leave).
    fn says(bytes: Vec<u8>) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().expect("accept");
            let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
            let _ = s.write_all(&bytes);
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = s.read(&mut [0u8; 64]);
        });
        port
    }

    fn greet(bytes: Vec<u8>) -> SmtpError {
        let port = says(bytes);
        Session::connect(
            "127.0.0.1",
            port,
            Duration::from_secs(5),
            None,
            &ClientId::default(),
        )
        .expect_err("no session")
    }

    #[test]
    fn a_line_without_end_is_refused_at_the_line_limit() {
        let mut flood = b"220 ".to_vec();
        flood.extend(std::iter::repeat_n(b'A', 1 << 20));
        let e = greet(flood);
        assert_eq!(
            e,
            SmtpError::TooLong(format!("a reply line of more than {MAX_LINE} bytes"))
        );
        assert!(e.to_string().starts_with("reply too long: "), "{e}");
    }

    #[test]
    fn too_many_lines_are_refused() {
        let flood: Vec<u8> = std::iter::repeat_n(&b"220-hello\r\n"[..], MAX_LINES + 1)
            .flatten()
            .copied()
            .collect();
        assert_eq!(
            greet(flood),
            SmtpError::TooLong(format!("a reply of more than {MAX_LINES} lines"))
        );
    }

    #[test]
    fn a_refusal_keeps_its_code() {
        let e = greet(b"554 5.7.1 go away\r\n".to_vec());
        assert!(e.is_permanent() && !e.is_transient(), "{e:?}");
        assert_eq!(e.code(), Some(554));
        assert_eq!(e.to_string(), "permanent error (554): 5.7.1 go away");
    }

    #[test]
    fn a_trickle_ends_at_the_session_deadline() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().expect("accept");
            for b in b"220 slowly, very slowly, ever so slowly".iter() {
                if s.write_all(&[*b]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let timeout = Duration::from_millis(300);
        let started = Instant::now();
        let e = Session::connect("127.0.0.1", port, timeout, None, &ClientId::default())
            .expect_err("no session");
        assert_eq!(e, SmtpError::Deadline("900ms".into()));
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
    }
}
