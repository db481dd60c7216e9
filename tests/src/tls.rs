//! Real TLS servers on 127.0.0.1 for the probe tests.
//!
//! [`TlsServer`] serves one certificate chain (made with [`crate::CertFactory`]) from an
//! in-test `openssl::ssl::SslAcceptor` on a free loopback port. Connections are handled one
//! at a time on a single thread, each bounded by socket timeouts, and the server stops after
//! [`TlsServer::MAX_CONNECTIONS`] connections or when it is stopped or dropped, so a test
//! can never leave a busy thread behind. Once stopped, nothing listens on the port any more
//! (connections are refused), which is how tests make an endpoint go away.
//!
//! [`closed_port`] gives a loopback port nobody listens on.

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use openssl::ssl::{SslAcceptor, SslMethod};

use crate::GeneratedCert;

/// How long one connection may take (each read and write) before the server drops it.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the accept loop looks at its stop flag.
const ACCEPT_POLL: Duration = Duration::from_millis(20);

/// A TLS server on `127.0.0.1:PORT` presenting `leaf` followed by `chain`.
pub struct TlsServer {
    address: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<usize>>,
}

impl TlsServer {
    /// The server ends by itself after this many connections.
    pub const MAX_CONNECTIONS: usize = 1000;

    /// Starts serving `leaf` (with its private key) and the extra certificates `chain`, in
    /// that order, exactly as given: nothing is added or completed.
    pub fn serve(leaf: &GeneratedCert, chain: &[&GeneratedCert]) -> TlsServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        Self::serve_listener(listener, leaf, chain)
    }

    /// [`TlsServer::serve`] on a given `127.0.0.1:PORT` (a stopped server's, to stand for
    /// the same endpoint after a certificate change).
    pub fn serve_on(address: &str, leaf: &GeneratedCert, chain: &[&GeneratedCert]) -> TlsServer {
        let listener =
            TcpListener::bind(address).unwrap_or_else(|e| panic!("bind {address} again: {e}"));
        Self::serve_listener(listener, leaf, chain)
    }

    fn serve_listener(
        listener: TcpListener,
        leaf: &GeneratedCert,
        chain: &[&GeneratedCert],
    ) -> TlsServer {
        let mut builder = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())
            .expect("TLS acceptor builder");
        builder
            .set_private_key(&leaf.pkey())
            .expect("server private key");
        builder
            .set_certificate(&leaf.x509())
            .expect("server certificate");
        for c in chain {
            builder
                .add_extra_chain_cert(c.x509())
                .expect("extra chain certificate");
        }
        builder
            .check_private_key()
            .expect("key matches certificate");
        let acceptor = builder.build();

        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let address = listener.local_addr().expect("listener address");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = thread::Builder::new()
            .name(format!("tls-server-{}", address.port()))
            .spawn(move || {
                let mut served = 0usize;
                while served < Self::MAX_CONNECTIONS && !flag.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            served += 1;
                            let _ = stream.set_nonblocking(false);
                            let _ = stream.set_read_timeout(Some(CONNECTION_TIMEOUT));
                            let _ = stream.set_write_timeout(Some(CONNECTION_TIMEOUT));
                            if let Ok(mut tls) = acceptor.accept(stream) {
                                let _ = tls.shutdown();
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(ACCEPT_POLL),
                        Err(_) => thread::sleep(ACCEPT_POLL),
                    }
                }
                // The listener is dropped here: the port is closed.
                served
            })
            .expect("spawn TLS server thread");
        TlsServer {
            address,
            stop,
            thread: Some(thread),
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// `127.0.0.1:PORT`, as `certctl probe` takes it.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port())
    }

    /// Stops the server and closes its port; returns how many connections it accepted.
    pub fn stop(mut self) -> usize {
        self.shutdown()
    }

    fn shutdown(&mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take() {
            Some(t) => t.join().unwrap_or(0),
            None => 0,
        }
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A loopback port nothing listens on (bound once to get a free one, then released).
pub fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().expect("listener address").port()
}
