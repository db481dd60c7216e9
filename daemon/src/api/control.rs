//! The control socket: how `certctl` reaches a running `certd` (Unix domain socket).
//!
//! This module and `server::signals` are the only OS-specific parts of the daemon; a
//! Windows build would put a named pipe behind the same functions.
//!
//! Protocol: the client sends one [`Request`] as a JSON line, the server answers with one
//! [`Response`] as a JSON line and closes. A large text answer (`list --json`) is
//! [`Response::Stream`] followed by frames: a 4-byte big-endian length and that many bytes,
//! ended by a frame of length 0 (a connection closed before it is a truncated answer), so
//! neither side holds the whole text and nothing is encoded twice. The socket lives in the store folder (mode
//! 0700) and is itself mode 0600; the server also refuses peers of another user (checked
//! with the peer's credentials), and nothing it returns contains private keys.
//!
//! Bounds: a request line may be at most [`MAX_REQUEST_BYTES`] (1 MiB), except the
//! requests that carry lists (`scan` paths, `revoke` ids, `fleet`: the rows of
//! `agents import-registrations`), which may have `MAX_LIST_REQUEST_BYTES` — and only one
//! connection at a time may read past the first bound. A longer request gets an error
//! answer and the connection is closed. At most [`MAX_CONNECTIONS`] clients are served at
//! once (more wait in the listen backlog), so reading requests never holds more than
//! `MAX_CONNECTIONS × MAX_REQUEST_BYTES + MAX_LIST_REQUEST_BYTES`.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::api::{Request, Response};

/// The longest request line (JSON and newline) of most requests.
pub const MAX_REQUEST_BYTES: usize = 1 << 20;
/// The longest request line of the requests that carry lists (`LIST_REQUESTS`: `scan`,
/// `revoke`, `fleet`): `agents import-registrations` of 200,000 agents is about 55 MiB.
pub(crate) const MAX_LIST_REQUEST_BYTES: usize = 96 << 20;
/// The requests that may be longer than [`MAX_REQUEST_BYTES`] (their `request` tag).
const LIST_REQUESTS: [&str; 3] = ["scan", "revoke", "fleet"];
/// Clients served at the same time.
pub const MAX_CONNECTIONS: usize = 32;

/// The `request` tag a request line starts with (the client writes it first), if it can
/// be read from `prefix`.
fn request_tag(prefix: &[u8]) -> Option<&str> {
    let prefix = &prefix[..prefix.len().min(128)];
    let text = match std::str::from_utf8(prefix) {
        Ok(text) => text,
        Err(e) => std::str::from_utf8(&prefix[..e.valid_up_to()]).ok()?,
    };
    let rest = text
        .trim_start()
        .strip_prefix('{')?
        .trim_start()
        .strip_prefix("\"request\"")?
        .trim_start()
        .strip_prefix(':')?
        .trim_start()
        .strip_prefix('"')?;
    rest.split_once('"').map(|(tag, _)| tag)
}

/// The longest request line certd accepts for a request that starts with `prefix`.
fn request_limit(prefix: &[u8]) -> usize {
    match request_tag(prefix) {
        Some(tag) if LIST_REQUESTS.contains(&tag) => MAX_LIST_REQUEST_BYTES,
        _ => MAX_REQUEST_BYTES,
    }
}

/// Control socket errors.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Binding, connecting to, writing to or reading from the socket failed.
    #[error("cannot use the control socket {}: {source}", path.display())]
    Io {
        /// The socket file (`STORE/certd.sock`).
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// No (complete) answer within the client's timeout: the one given to
    /// [`Client::call`], which applies to each read.
    #[error("certd did not answer within {0:?} (it may be busy or hung)")]
    Timeout(Duration),
    /// The answer is not a readable [`Response`] (or the request could not be encoded, or
    /// certd closed the connection before the answer or its end frame).
    #[error("certd sent an answer certctl cannot read: {0}")]
    Protocol(String),
    /// `ControlListener::bind`: a live certd already answers on the store's socket.
    #[error("another certd already serves the store at {} (its control socket answers)", path.display())]
    AlreadyRunning {
        /// The socket file that answered.
        path: PathBuf,
    },
    /// Writing a streamed answer to the client's output (e.g. stdout) failed.
    #[error("cannot write certd's answer: {0}")]
    Output(#[source] std::io::Error),
    /// The client refused to send a request line longer than certd accepts
    /// ([`MAX_REQUEST_BYTES`], or `MAX_LIST_REQUEST_BYTES` for list-carrying requests).
    #[error(
        "the request is {bytes} bytes long, certd accepts at most {max} bytes: pass fewer \
         paths or rows at a time"
    )]
    RequestTooLarge {
        /// The request line's length in bytes (JSON and newline).
        bytes: usize,
        /// The most certd accepts for this request, in bytes.
        max: usize,
    },
}

/// Where the control socket of the store in `store_dir` is.
pub fn socket_path(store_dir: &Path) -> PathBuf {
    store_dir.join("certd.sock")
}

// ---- client ------------------------------------------------------------------------------

/// A connection to a running certd.
pub struct Client {
    path: PathBuf,
    stream: StdUnixStream,
}

impl Client {
    /// Connects to the certd serving `store_dir`; `None` when no daemon listens there.
    pub fn connect(store_dir: &Path) -> Option<Client> {
        let path = socket_path(store_dir);
        let stream = StdUnixStream::connect(&path).ok()?;
        Some(Client { path, stream })
    }

    /// Sends one request and waits up to `timeout` for the answer.
    pub fn call(self, request: &Request, timeout: Duration) -> Result<Response, ControlError> {
        self.call_streaming(request, timeout, &mut std::io::sink())
    }

    /// Like [`Client::call`]; a streamed answer ([`Response::Stream`]) is copied to `out` as
    /// it arrives (then `Response::Stream` is returned). `timeout` applies to each read.
    pub fn call_streaming(
        mut self,
        request: &Request,
        timeout: Duration,
        out: &mut dyn Write,
    ) -> Result<Response, ControlError> {
        let io = |source| ControlError::Io {
            path: self.path.clone(),
            source,
        };
        self.stream.set_write_timeout(Some(timeout)).map_err(io)?;
        self.stream.set_read_timeout(Some(timeout)).map_err(io)?;
        let mut line =
            serde_json::to_vec(request).map_err(|e| ControlError::Protocol(e.to_string()))?;
        line.push(b'\n');
        let max = request_limit(&line);
        if line.len() > max {
            return Err(ControlError::RequestTooLarge {
                bytes: line.len(),
                max,
            });
        }
        self.stream.write_all(&line).map_err(io)?;
        let mut reader = BufReader::with_capacity(FRAME_BYTES + 4, &self.stream);
        let mut answer = String::new();
        let read_err = |e: std::io::Error| {
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) {
                ControlError::Timeout(timeout)
            } else {
                ControlError::Io {
                    path: self.path.clone(),
                    source: e,
                }
            }
        };
        match reader.read_line(&mut answer) {
            Ok(0) => {
                return Err(ControlError::Protocol(
                    "certd closed the connection without answering (was the request refused?)"
                        .into(),
                ))
            }
            Ok(_) => {}
            Err(e) => return Err(read_err(e)),
        }
        let response: Response =
            serde_json::from_str(&answer).map_err(|e| ControlError::Protocol(e.to_string()))?;
        if let Response::Stream = response {
            copy_frames(&mut reader, out).map_err(|e| match e {
                FrameError::Read(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    ControlError::Protocol(
                        "certd closed the connection before the end of its answer".into(),
                    )
                }
                FrameError::Read(e) => read_err(e),
                FrameError::Write(source) => ControlError::Output(source),
            })?;
        }
        Ok(response)
    }
}

/// Frames of a streamed answer are at most this long.
const FRAME_BYTES: usize = 256 << 10;

enum FrameError {
    Read(std::io::Error),
    Write(std::io::Error),
}

/// Copies the frames of a streamed answer to `out`, up to the end frame.
fn copy_frames(reader: &mut impl Read, out: &mut dyn Write) -> Result<(), FrameError> {
    let mut buf = vec![0u8; FRAME_BYTES];
    loop {
        let mut len = [0u8; 4];
        reader.read_exact(&mut len).map_err(FrameError::Read)?;
        let len = u32::from_be_bytes(len) as usize;
        if len == 0 {
            return out.flush().map_err(FrameError::Write);
        }
        if len > buf.len() {
            return Err(FrameError::Read(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("a frame of {len} bytes (at most {FRAME_BYTES} expected)"),
            )));
        }
        reader
            .read_exact(&mut buf[..len])
            .map_err(FrameError::Read)?;
        out.write_all(&buf[..len]).map_err(FrameError::Write)?;
        // certd sends a short frame when it has rows ready (the first screen): pass them on.
        out.flush().map_err(FrameError::Write)?;
    }
}

/// Writes a streamed answer's frames (see the module documentation); [`FrameWriter::finish`]
/// sends the end frame.
pub(crate) struct FrameWriter<W: Write> {
    inner: W,
    buf: Vec<u8>,
}

impl<W: Write> FrameWriter<W> {
    /// Frames what is written to `inner` (the connection), buffering up to one full frame
    /// (256 KiB); a `flush` sends a short frame at once.
    pub(crate) fn new(inner: W) -> Self {
        FrameWriter {
            inner,
            buf: Vec::with_capacity(FRAME_BYTES),
        }
    }

    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let len = u32::try_from(self.buf.len()).map_err(std::io::Error::other)?;
        self.inner.write_all(&len.to_be_bytes())?;
        self.inner.write_all(&self.buf)?;
        self.buf.clear();
        Ok(())
    }

    /// Sends what is buffered and the end frame; returns the inner writer.
    pub(crate) fn finish(mut self) -> std::io::Result<W> {
        self.send()?;
        self.inner.write_all(&0u32.to_be_bytes())?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for FrameWriter<W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let room = FRAME_BYTES - self.buf.len();
        let n = data.len().min(room);
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == FRAME_BYTES {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()?;
        self.inner.flush()
    }
}

// ---- server ------------------------------------------------------------------------------

/// The daemon's listening socket. Removes the socket file when dropped.
pub(crate) struct ControlListener {
    path: PathBuf,
    listener: UnixListener,
    /// [`MAX_CONNECTIONS`] turns; an accepted client holds one until it is dropped.
    slots: Arc<Semaphore>,
    /// The one turn to read a request past [`MAX_REQUEST_BYTES`].
    large: Arc<Semaphore>,
}

impl ControlListener {
    /// Binds the control socket of `store_dir`. A stale socket file (nobody answers) is
    /// replaced; a live one means another certd serves this store.
    pub(crate) fn bind(store_dir: &Path) -> Result<ControlListener, ControlError> {
        let path = socket_path(store_dir);
        let io = |source| ControlError::Io {
            path: path.clone(),
            source,
        };
        if path.exists() {
            if StdUnixStream::connect(&path).is_ok() {
                return Err(ControlError::AlreadyRunning { path });
            }
            std::fs::remove_file(&path).map_err(io)?;
        }
        let listener = UnixListener::bind(&path).map_err(io)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        Ok(ControlListener {
            path,
            listener,
            slots: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
            large: Arc::new(Semaphore::new(1)),
        })
    }

    /// The socket file it listens on (`STORE/certd.sock`), removed on drop.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Waits for the next client of the same user (and, first, until fewer than
    /// [`MAX_CONNECTIONS`] are being served). Peers of other users are refused (logged) and
    /// never see an answer.
    pub(crate) async fn accept(&self) -> std::io::Result<Connection> {
        let slot = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(std::io::Error::other)?;
        loop {
            let (stream, _) = self.listener.accept().await?;
            let me = rustix::process::geteuid().as_raw();
            match stream.peer_cred() {
                Ok(cred) if cred.uid() == me => {
                    return Ok(Connection {
                        stream,
                        large: self.large.clone(),
                        _slot: slot,
                    })
                }
                Ok(cred) => {
                    tracing::warn!(peer_uid = cred.uid(), peer_pid = ?cred.pid(), "refused a control connection from another user");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "refused a control connection: cannot read peer credentials")
                }
            }
        }
    }
}

impl Drop for ControlListener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// One accepted client.
pub struct Connection {
    stream: UnixStream,
    large: Arc<Semaphore>,
    /// Its turn among the [`MAX_CONNECTIONS`], given back when the connection is dropped.
    _slot: OwnedSemaphorePermit,
}

impl Connection {
    /// Reads the request (bounded in size and time: see the module documentation). An
    /// `Err` is the message for the error answer, after which the connection is closed.
    pub async fn request(&mut self, timeout: Duration) -> Result<Request, String> {
        match tokio::time::timeout(timeout, self.read_line()).await {
            Err(_) => Err(format!(
                "the client sent no complete request within {}s",
                timeout.as_secs()
            )),
            Ok(Err(e)) => Err(e),
            Ok(Ok(line)) => {
                serde_json::from_slice(&line).map_err(|e| format!("unreadable request: {e}"))
            }
        }
    }

    /// The request line, without its newline; bytes after it are ignored.
    async fn read_line(&mut self) -> Result<Vec<u8>, String> {
        const CHUNK: usize = 64 << 10;
        let mut line: Vec<u8> = Vec::with_capacity(CHUNK);
        let mut chunk = vec![0u8; CHUNK];
        let mut limit = MAX_REQUEST_BYTES;
        let mut _large_turn = None;
        loop {
            // Reading one byte past the limit tells "too long" from "exactly the limit".
            let room = (limit + 1 - line.len()).min(CHUNK);
            let n = self
                .stream
                .read(&mut chunk[..room])
                .await
                .map_err(|e| format!("cannot read the request: {e}"))?;
            if n == 0 {
                return Err(
                    "the client closed the connection before the end of its request \
                            (a newline)"
                        .into(),
                );
            }
            let (data, done) = match chunk[..n].iter().position(|&b| b == b'\n') {
                Some(end) => (&chunk[..end], true),
                None => (&chunk[..n], false),
            };
            if line.capacity() - line.len() < data.len() {
                // Grow by doubling, but never past the limit.
                let wanted = (line.capacity() * 2)
                    .min(limit + 1)
                    .max(line.len() + data.len());
                line.reserve_exact(wanted - line.len());
            }
            line.extend_from_slice(data);
            if done && line.len() <= limit {
                return Ok(line);
            }
            if line.len() > limit {
                let list_limit = request_limit(&line);
                if limit < list_limit {
                    // Only one long request is read at a time.
                    let turn = self.large.clone().acquire_owned().await;
                    _large_turn = Some(turn.map_err(|e| e.to_string())?);
                    limit = list_limit;
                    if done {
                        return Ok(line);
                    }
                    continue;
                }
                return Err(format!(
                    "the request is longer than {} bytes (only scan, revoke and fleet \
                     requests may have up to {} bytes); closing the connection",
                    MAX_REQUEST_BYTES, MAX_LIST_REQUEST_BYTES
                ));
            }
        }
    }

    /// Streams an answer from blocking code (call it inside `spawn_blocking`): `write`
    /// produces the text, or returns an error [`Response`] before writing anything, which
    /// is then sent instead. A failure after the first byte closes the connection without
    /// the end frame, which the client reports as a truncated answer.
    pub fn respond_streaming(
        self,
        write: impl FnOnce(&mut dyn Write) -> Result<std::io::Result<()>, Box<Response>>,
    ) -> std::io::Result<()> {
        let stream = self.stream.into_std()?;
        stream.set_nonblocking(false)?;
        stream.set_write_timeout(Some(STREAM_WRITE_TIMEOUT))?;
        // The header goes out with the first frame: nothing is sent before `write` decided.
        let mut header = serde_json::to_vec(&Response::Stream).map_err(std::io::Error::other)?;
        header.push(b'\n');
        let mut out = FrameWriter::new(HeaderFirst {
            header: Some(header),
            inner: std::io::BufWriter::with_capacity(FRAME_BYTES + 4, &stream),
        });
        match write(&mut out) {
            Ok(Ok(())) => {
                let mut inner = out.finish()?;
                inner.send_header()?;
                inner.inner.flush()?;
            }
            Ok(Err(e)) => return Err(e),
            Err(response) if out.buf.is_empty() && out.inner.header.is_some() => {
                let mut line = serde_json::to_vec(&*response).map_err(std::io::Error::other)?;
                line.push(b'\n');
                let mut w = &stream;
                w.write_all(&line)?;
            }
            Err(response) => {
                return Err(std::io::Error::other(format!(
                    "failed after part of the answer was written: {response:?}"
                )))
            }
        }
        stream.shutdown(std::net::Shutdown::Write)
    }

    /// Sends the answer and closes.
    pub async fn respond(mut self, response: &Response) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(response).map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.stream.write_all(&line).await?;
        self.stream.shutdown().await
    }
}

/// How long certd waits for a client to take a chunk of a streamed answer.
const STREAM_WRITE_TIMEOUT: Duration = Duration::from_secs(120);

/// Sends `header` before the first byte of the body (or on [`HeaderFirst::send_header`]).
struct HeaderFirst<W: Write> {
    header: Option<Vec<u8>>,
    inner: W,
}

impl<W: Write> HeaderFirst<W> {
    fn send_header(&mut self) -> std::io::Result<()> {
        match self.header.take() {
            Some(h) => self.inner.write_all(&h),
            None => Ok(()),
        }
    }
}

impl<W: Write> Write for HeaderFirst<W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.send_header()?;
        self.inner.write(data)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send_header()?;
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_requests_may_be_longer() {
        let line = |r: &Request| serde_json::to_vec(r).expect("json");
        let scan = line(&Request::Scan {
            paths: vec!["/a".into()],
            options: Default::default(),
        });
        assert_eq!(request_tag(&scan), Some("scan"));
        assert_eq!(request_limit(&scan), MAX_LIST_REQUEST_BYTES);
        assert_eq!(request_limit(&line(&Request::Status)), MAX_REQUEST_BYTES);
        assert_eq!(
            request_limit(b" { \"request\" : \"fleet\","),
            MAX_LIST_REQUEST_BYTES
        );
        for other in [
            &b"aaaa"[..],
            b"{\"paths\":[],\"request\":\"scan\"}",
            b"",
            b"\xff{",
        ] {
            assert_eq!(request_limit(other), MAX_REQUEST_BYTES);
        }
        // `agents import-registrations` of 200,000 agents (the fleet size certctl is made
        // for), with both hashes, fits.
        let registrations = (0..200_000u32)
            .map(|i| certctl_store::Registration {
                agent: format!("agent-{i:06}.branch-{:03}.example.org", i % 997),
                guid: format!("{i:08x}-d9cb-469f-a165-70867728950e"),
                spki_sha256: Some(certctl_store::Sha256([0xab; 32])),
                fingerprint: Some(certctl_store::Sha256([0xcd; 32])),
                imported_at: 1_800_000_000,
            })
            .collect();
        let import = line(&Request::Fleet {
            fleet: crate::api::fleet::FleetRequest::ImportRegistrations {
                source: "/var/lib/mgmt/registrations-export-2026-12-03.csv".into(),
                registrations,
                merge: false,
            },
        });
        assert!(
            import.len() < MAX_LIST_REQUEST_BYTES,
            "{} bytes",
            import.len()
        );
        assert!(
            import.len() > MAX_REQUEST_BYTES * 16,
            "{} bytes",
            import.len()
        );
    }

    fn connection(large: &Arc<Semaphore>) -> (Connection, StdUnixStream) {
        let (server, client) = StdUnixStream::pair().expect("pair");
        server.set_nonblocking(true).expect("nonblocking");
        let conn = Connection {
            stream: UnixStream::from_std(server).expect("tokio stream"),
            large: large.clone(),
            _slot: Arc::new(Semaphore::new(1))
                .try_acquire_owned()
                .expect("slot"),
        };
        (conn, client)
    }

    #[tokio::test]
    async fn request_lines_are_bounded() {
        let large = Arc::new(Semaphore::new(1));
        let timeout = Duration::from_secs(10);
        // A normal request.
        let (mut conn, mut client) = connection(&large);
        client
            .write_all(b"{\"request\":\"status\"}\nrest")
            .expect("send");
        assert!(matches!(conn.request(timeout).await, Ok(Request::Status)));
        // Anything else longer than 1 MiB: refused once the bound is passed.
        let (mut conn, client) = connection(&large);
        let writer = std::thread::spawn(move || {
            let mut client = client;
            let junk = vec![b'a'; 64 << 10];
            while client.write_all(&junk).is_ok() {}
        });
        let err = conn.request(timeout).await.expect_err("too long");
        assert!(err.contains("longer than 1048576 bytes"), "{err}");
        drop(conn);
        writer.join().expect("writer");
        // A scan of 3 MiB of paths is read in full.
        let paths: Vec<PathBuf> = (0..40_000)
            .map(|i| format!("/srv/certs/{i:070}.pem").into())
            .collect();
        let mut line = serde_json::to_vec(&Request::Scan {
            paths: paths.clone(),
            options: Default::default(),
        })
        .expect("json");
        line.push(b'\n');
        assert!(line.len() > 3 * MAX_REQUEST_BYTES);
        let (mut conn, mut client) = connection(&large);
        let writer = std::thread::spawn(move || client.write_all(&line));
        match conn.request(timeout).await {
            Ok(Request::Scan { paths: got, .. }) => assert_eq!(got, paths),
            other => panic!("{other:?}"),
        }
        writer.join().expect("writer").expect("sent");
        // No line at all: the time bound.
        let (mut conn, _client) = connection(&large);
        let err = conn
            .request(Duration::from_millis(100))
            .await
            .expect_err("timeout");
        assert!(err.contains("no complete request"), "{err}");
    }

    #[test]
    fn frames_round_trip_and_truncation_is_detected() {
        let text: Vec<u8> = (0..(FRAME_BYTES * 2 + 123))
            .map(|i| (i % 251) as u8)
            .collect();
        let mut w = FrameWriter::new(Vec::new());
        for piece in text.chunks(1000) {
            w.write_all(piece).unwrap();
        }
        let wire = w.finish().unwrap();
        let mut out = Vec::new();
        assert!(copy_frames(&mut &wire[..], &mut out).is_ok());
        assert!(out == text);

        // Cut anywhere before the end frame: an error, never a silent short answer.
        for cut in [0, 3, 4, 100, wire.len() - 4, wire.len() - 1] {
            let mut out = Vec::new();
            match copy_frames(&mut &wire[..cut], &mut out) {
                Err(FrameError::Read(e)) => {
                    assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "cut {cut}")
                }
                _ => panic!("cut at {cut} not detected"),
            }
        }
        // An empty answer is just the end frame.
        let wire = FrameWriter::new(Vec::new()).finish().unwrap();
        assert_eq!(wire, vec![0, 0, 0, 0]);
    }
}
