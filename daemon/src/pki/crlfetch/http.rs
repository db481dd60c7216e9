//! Downloading CRLs: a minimal HTTP/1.0 GET of checked URLs ([`crate::net::url::CrlUrl`]),
//! bounded in size ([`super::MAX_CRL_BYTES`]) and time (one deadline per URL covering name
//! resolution, connection, redirects and the whole answer), and [`download_all`], which
//! fetches a pass's URLs in parallel ([`PARALLEL`] at once, at most [`PER_HOST`] per host)
//! under one deadline for the pass. Nothing here touches the store.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use super::{UrlError, MAX_CRL_BYTES};
use crate::net::url::{escaped, AllowList, CrlUrl, Host, UrlProblem};

/// Downloads running at once in a pass.
pub(crate) const PARALLEL: usize = 8;
/// Downloads running at once from one host.
pub(crate) const PER_HOST: usize = 2;
/// Redirects followed (to other checked, allowed `http://` URLs).
const MAX_REDIRECTS: usize = 3;

/// How downloads are bounded.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    /// One URL, all included.
    pub per_url: Duration,
    /// When the pass gives up on what has not finished.
    pub pass_deadline: Instant,
    /// `[crl] allow`; `None`: any host.
    pub allow: Option<AllowList>,
}

/// Checks `url` (and the allow list for its host name) without any network access.
pub(crate) fn check(url: &str, allow: Option<&AllowList>) -> Result<CrlUrl, UrlError> {
    let parsed = CrlUrl::parse(url).map_err(|p| problem(url, p))?;
    if let Some(allow) = allow {
        if !allow.allows_name(&parsed.host) && !allow.has_networks() {
            return Err(not_allowed(url, &parsed.host, allow));
        }
    }
    Ok(parsed)
}

fn problem(url: &str, p: UrlProblem) -> UrlError {
    match p {
        UrlProblem::Scheme => UrlError::Unsupported { url: escaped(url) },
        UrlProblem::Invalid(cause) => UrlError::Invalid {
            url: escaped(url),
            cause,
        },
    }
}

fn not_allowed(url: &str, host: &Host, allow: &AllowList) -> UrlError {
    UrlError::NotAllowed {
        url: escaped(url),
        host: host.to_string(),
        allowed: allow.to_string(),
    }
}

/// Fetches every URL (already [`check`]ed), in parallel within the limits; each URL's
/// result, in the order of `urls`.
pub(crate) fn download_all(
    urls: Vec<(String, CrlUrl)>,
    limits: &Limits,
) -> BTreeMap<String, Result<Vec<u8>, UrlError>> {
    struct Queue {
        pending: VecDeque<(String, CrlUrl)>,
        busy: HashMap<String, usize>,
    }
    let workers = urls.len().clamp(1, PARALLEL);
    let queue = Mutex::new(Queue {
        pending: urls.into(),
        busy: HashMap::new(),
    });
    let wake = Condvar::new();
    let results = Mutex::new(BTreeMap::new());
    fn lock(m: &Mutex<Queue>) -> std::sync::MutexGuard<'_, Queue> {
        m.lock().unwrap_or_else(|p| p.into_inner())
    }
    let put = |url: String, r: Result<Vec<u8>, UrlError>| {
        results
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(url, r);
    };
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                // The next URL whose host has a free slot, or the end.
                let (url, parsed, host) = {
                    let mut q = lock(&queue);
                    loop {
                        if q.pending.is_empty() {
                            return;
                        }
                        let now = Instant::now();
                        if now >= limits.pass_deadline {
                            for (url, _) in q.pending.drain(..) {
                                let e = UrlError::Deadline { url: escaped(&url) };
                                put(url, Err(e));
                            }
                            wake.notify_all();
                            return;
                        }
                        let free = q.pending.iter().position(|(_, u)| {
                            q.busy.get(&u.host.to_string()).copied().unwrap_or(0) < PER_HOST
                        });
                        if let Some((url, parsed)) = free.and_then(|i| q.pending.remove(i)) {
                            let host = parsed.host.to_string();
                            *q.busy.entry(host.clone()).or_default() += 1;
                            break (url, parsed, host);
                        }
                        q = wake
                            .wait_timeout(q, limits.pass_deadline - now)
                            .map(|(q, _)| q)
                            .unwrap_or_else(|p| p.into_inner().0);
                    }
                };
                let deadline = (Instant::now() + limits.per_url).min(limits.pass_deadline);
                let result = get(&url, parsed, deadline, limits);
                put(url, result);
                let mut q = lock(&queue);
                if let Some(n) = q.busy.get_mut(&host) {
                    *n -= 1;
                }
                drop(q);
                wake.notify_all();
            });
        }
    });
    results.into_inner().unwrap_or_else(|p| p.into_inner())
}

/// GETs `parsed` (the checked `url`), following redirects, by `deadline`.
fn get(
    url: &str,
    mut parsed: CrlUrl,
    deadline: Instant,
    limits: &Limits,
) -> Result<Vec<u8>, UrlError> {
    let err = |cause: String| UrlError::Http {
        url: escaped(url),
        cause,
    };
    for _ in 0..=MAX_REDIRECTS {
        let addr = resolve(url, &parsed, deadline, limits.allow.as_ref())?;
        let (status, head, body) = exchange(&parsed, addr, deadline).map_err(|cause| {
            if Instant::now() >= deadline {
                UrlError::Deadline { url: escaped(url) }
            } else {
                err(cause)
            }
        })?;
        match status {
            200 => return Ok(body),
            301 | 302 | 303 | 307 | 308 => {
                let location = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.trim()
                            .eq_ignore_ascii_case("location")
                            .then(|| v.trim().to_string())
                    })
                    .ok_or_else(|| err(format!("HTTP {status} without a Location")))?;
                let next = parsed.join(&location).map_err(|p| {
                    let why = match p {
                        UrlProblem::Scheme => "not an http:// URL".to_string(),
                        UrlProblem::Invalid(why) => why,
                    };
                    err(format!(
                        "redirected to `{}`, refused: {why}",
                        escaped(&location)
                    ))
                })?;
                if let Some(allow) = &limits.allow {
                    if !allow.allows_name(&next.host) && !allow.has_networks() {
                        return Err(not_allowed(url, &next.host, allow));
                    }
                }
                parsed = next;
            }
            other => return Err(err(format!("HTTP {other}"))),
        }
    }
    Err(err("too many redirects".into()))
}

/// The address to connect to: the URL's own, or its name resolved (within the deadline),
/// and in both cases allowed by `[crl] allow`.
fn resolve(
    url: &str,
    parsed: &CrlUrl,
    deadline: Instant,
    allow: Option<&AllowList>,
) -> Result<SocketAddr, UrlError> {
    let err = |cause: String| UrlError::Http {
        url: escaped(url),
        cause,
    };
    let addrs: Vec<SocketAddr> = match &parsed.host {
        Host::Ip(ip) => vec![SocketAddr::new(*ip, parsed.port)],
        Host::Name(name) => {
            // std's resolver cannot be given a timeout: it runs on its own thread, which is
            // left behind if it outlives the deadline.
            let (tx, rx) = std::sync::mpsc::channel();
            let target = (name.clone(), parsed.port);
            std::thread::spawn(move || {
                let _ = tx.send(target.to_socket_addrs().map(|a| a.collect::<Vec<_>>()));
            });
            let wait = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok(Ok(addrs)) => addrs,
                Ok(Err(e)) => return Err(err(format!("cannot resolve {name}: {e}"))),
                Err(_) => return Err(UrlError::Deadline { url: escaped(url) }),
            }
        }
    };
    let allowed: Vec<SocketAddr> = match allow {
        Some(list) if !list.allows_name(&parsed.host) => addrs
            .into_iter()
            .filter(|a| list.allows_ip(a.ip()))
            .collect(),
        _ => addrs,
    };
    match (allowed.first(), allow) {
        (Some(addr), _) => Ok(*addr),
        (None, Some(list)) => Err(not_allowed(url, &parsed.host, list)),
        (None, None) => Err(err(format!("{} has no address", parsed.host))),
    }
}

/// One request and its answer: (status, head, body); errors as phrases.
fn exchange(
    parsed: &CrlUrl,
    addr: SocketAddr,
    deadline: Instant,
) -> Result<(u16, String, Vec<u8>), String> {
    let left = || {
        let d = deadline.saturating_duration_since(Instant::now());
        (!d.is_zero()).then_some(d).ok_or("the deadline passed")
    };
    let authority = &parsed.authority;
    let mut stream = TcpStream::connect_timeout(&addr, left()?)
        .map_err(|e| format!("cannot connect to {authority} ({addr}): {e}"))?;
    stream
        .set_write_timeout(Some(left()?))
        .map_err(|e| e.to_string())?;
    // Every part was checked to be printable ASCII without spaces (CrlUrl::parse).
    let request = format!(
        "GET {} HTTP/1.0\r\nHost: {authority}\r\nUser-Agent: certctl\r\nAccept: application/pkix-crl\r\nConnection: close\r\n\r\n",
        parsed.path
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("cannot send the request: {e}"))?;
    let mut response = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        stream
            .set_read_timeout(Some(left()?))
            .map_err(|e| e.to_string())?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                response.extend_from_slice(&buf[..n]);
                if response.len() > MAX_CRL_BYTES + 64 * 1024 {
                    return Err(format!("larger than {MAX_CRL_BYTES} bytes"));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("reading the answer: {e}")),
        }
    }
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("not an HTTP answer")?;
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let body = response.split_off(split + 4);
    if body.len() > MAX_CRL_BYTES {
        return Err(format!("larger than {MAX_CRL_BYTES} bytes"));
    }
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or("not an HTTP answer")?;
    Ok((status, head, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    fn limits(per_url: u64, pass: u64) -> Limits {
        Limits {
            per_url: Duration::from_secs(per_url),
            pass_deadline: Instant::now() + Duration::from_secs(pass),
            allow: None,
        }
    }

    /// A server that accepts and never answers; counts connections and the most held at
    /// once. The listener thread ends with the test process.
    fn silent_server() -> (u16, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (total, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (t, m) = (total.clone(), most.clone());
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for conn in listener.incoming().flatten() {
                conn.set_nonblocking(true).unwrap();
                held.push(conn);
                // Drop the connections the client closed.
                held.retain(|c| {
                    let mut b = [0u8; 512];
                    loop {
                        match (&*c).read(&mut b) {
                            Ok(0) => return false,
                            Ok(_) => continue,
                            Err(_) => return true,
                        }
                    }
                });
                t.fetch_add(1, Ordering::SeqCst);
                m.fetch_max(held.len(), Ordering::SeqCst);
            }
        });
        (port, total, most)
    }

    fn checked(url: &str) -> (String, CrlUrl) {
        (url.to_string(), check(url, None).unwrap())
    }

    #[test]
    fn the_pass_deadline_ends_held_downloads_and_unstarted_ones() {
        let (port, total, most) = silent_server();
        let urls: Vec<_> = (0..5)
            .map(|i| checked(&format!("http://127.0.0.1:{port}/{i}.crl")))
            .collect();
        let results = download_all(urls, &limits(60, 2));
        assert_eq!(results.len(), 5);
        for (url, r) in &results {
            assert!(matches!(r, Err(UrlError::Deadline { .. })), "{url}: {r:?}");
        }
        // One host: at most PER_HOST at once; the others never started.
        assert!(most.load(Ordering::SeqCst) <= PER_HOST, "{most:?}");
        assert_eq!(total.load(Ordering::SeqCst), PER_HOST);
    }

    #[test]
    fn a_host_outside_the_allow_list_is_refused_before_any_connection() {
        let allow = AllowList::parse(&["crl.example.com"]).unwrap();
        let e = check("http://127.0.0.1:9/a.crl", Some(&allow)).unwrap_err();
        assert!(matches!(e, UrlError::NotAllowed { .. }), "{e}");
        assert!(e.to_string().contains("not in the [crl] allow list"), "{e}");
        // With networks in the list, the address decides (here: not contacted either).
        let (port, total, _) = silent_server();
        let allow = AllowList::parse(&["10.0.0.0/8"]).unwrap();
        let url = format!("http://localhost:{port}/a.crl");
        let mut l = limits(5, 5);
        l.allow = Some(allow.clone());
        let results = download_all(vec![(url.clone(), check(&url, Some(&allow)).unwrap())], &l);
        assert!(
            matches!(results[&url], Err(UrlError::NotAllowed { .. })),
            "{results:?}"
        );
        assert_eq!(total.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn answers_are_read_and_redirects_checked() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for mut conn in listener.incoming().flatten() {
                let mut req = Vec::new();
                let mut b = [0u8; 512];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut b) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&b[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&req).into_owned();
                let answer: &[u8] = if text.starts_with("GET /moved ") {
                    b"HTTP/1.0 302 Found\r\nLocation: /here\r\n\r\n"
                } else if text.starts_with("GET /ldap ") {
                    b"HTTP/1.0 302 Found\r\nLocation: ldap://h/x\r\n\r\n"
                } else {
                    b"HTTP/1.0 200 OK\r\n\r\nbody"
                };
                let _ = conn.write_all(answer);
            }
        });
        let url = |p: &str| format!("http://127.0.0.1:{port}{p}");
        let results = download_all(
            vec![checked(&url("/moved")), checked(&url("/ldap"))],
            &limits(5, 10),
        );
        assert_eq!(results[&url("/moved")].as_deref().unwrap(), b"body");
        let e = results[&url("/ldap")].as_ref().unwrap_err().to_string();
        assert!(e.contains("refused"), "{e}");
    }
}
