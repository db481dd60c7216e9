//! The control socket: how `certctl` reaches a running `certd` (Unix domain socket).
//!
//! This module and [`crate::signals`] are the only OS-specific parts of the daemon; a
//! Windows build would put a named pipe behind the same functions.
//!
//! Protocol: the client sends one [`Request`] as a JSON line, the server answers with one
//! [`Response`] as a JSON line and closes. The socket lives in the store folder (mode
//! 0700) and is itself mode 0600; the server also refuses peers of another user (checked
//! with the peer's credentials), and nothing it returns contains private keys.

use std::io::{BufRead, BufReader, Write};
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
    pub fn call(mut self, request: &Request, timeout: Duration) -> Result<Response, ControlError> {
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
        let mut reader = BufReader::new(&self.stream);
        let mut answer = String::new();
        match reader.read_line(&mut answer) {
            Ok(0) => Err(ControlError::Protocol(
                "certd closed the connection without answering (was the request refused?)".into(),
            )),
            Ok(_) => {
                serde_json::from_str(&answer).map_err(|e| ControlError::Protocol(e.to_string()))
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Err(ControlError::Timeout(timeout))
            }
            Err(e) => Err(ControlError::Io {
                path: self.path.clone(),
                source: e,
            }),
        }
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

    /// Sends the answer and closes.
    pub async fn respond(mut self, response: &Response) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(response).map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.stream.write_all(&line).await?;
        self.stream.shutdown().await
    }
}
