//! The control socket: how `certctl` reaches a running `certd` (Unix domain socket).
//!
//! This module and [`crate::signals`] are the only OS-specific parts of the daemon; a
//! Windows build would put a named pipe behind the same functions.
//!
//! Protocol: the client sends one [`Request`] as a JSON line, the server answers with one
//! [`Response`] as a JSON line and closes. A large text answer (`list --json`) is
//! [`Response::Stream`] followed by frames: a 4-byte big-endian length and that many bytes,
//! ended by a frame of length 0 (a connection closed before it is a truncated answer), so
//! neither side holds the whole text and nothing is encoded twice. The socket lives in the store folder (mode
//! 0700) and is itself mode 0600; the server also refuses peers of another user (checked
//! with the peer's credentials), and nothing it returns contains private keys.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader as TokioBufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::api::{Request, Response};

/// Largest request accepted (a scan of many paths still fits easily).
const MAX_REQUEST_BYTES: u64 = 16 << 20;

/// Control socket errors.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("cannot use the control socket {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("certd did not answer within {0:?} (it may be busy or hung)")]
    Timeout(Duration),
    #[error("certd sent an answer certctl cannot read: {0}")]
    Protocol(String),
    #[error("another certd already serves the store at {} (its control socket answers)", path.display())]
    AlreadyRunning { path: PathBuf },
    #[error("cannot write certd's answer: {0}")]
    Output(#[source] std::io::Error),
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
    }
}

/// Writes a streamed answer's frames (see the module documentation); [`FrameWriter::finish`]
/// sends the end frame.
pub struct FrameWriter<W: Write> {
    inner: W,
    buf: Vec<u8>,
}

impl<W: Write> FrameWriter<W> {
    pub fn new(inner: W) -> Self {
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
    pub fn finish(mut self) -> std::io::Result<W> {
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
pub struct ControlListener {
    path: PathBuf,
    listener: UnixListener,
}

impl ControlListener {
    /// Binds the control socket of `store_dir`. A stale socket file (nobody answers) is
    /// replaced; a live one means another certd serves this store.
    pub fn bind(store_dir: &Path) -> Result<ControlListener, ControlError> {
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
        Ok(ControlListener { path, listener })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits for the next client of the same user. Peers of other users are refused
    /// (logged) and never see an answer.
    pub async fn accept(&self) -> std::io::Result<Connection> {
        loop {
            let (stream, _) = self.listener.accept().await?;
            let me = rustix::process::geteuid().as_raw();
            match stream.peer_cred() {
                Ok(cred) if cred.uid() == me => return Ok(Connection { stream }),
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
}

impl Connection {
    /// Reads the request (bounded in size and time).
    pub async fn request(&mut self, timeout: Duration) -> Result<Request, String> {
        let mut line = String::new();
        let mut reader = TokioBufReader::new(tokio::io::AsyncReadExt::take(
            &mut self.stream,
            MAX_REQUEST_BYTES,
        ));
        match tokio::time::timeout(timeout, reader.read_line(&mut line)).await {
            Err(_) => Err("the client sent no request in time".into()),
            Ok(Err(e)) => Err(format!("cannot read the request: {e}")),
            Ok(Ok(_)) => {
                serde_json::from_str(&line).map_err(|e| format!("unreadable request: {e}"))
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
