//! A counting, fault-injecting HTTP proxy for tests, in front of a plain-HTTP registry: it logs
//! every request (path, Range, status, body bytes sent) and applies faults to matching requests:
//! connection resets before or during the body, truncated bodies, flipped bytes, 503/429
//! answers, stalls. It can also play a bearer-token auth front (token service + challenge) with
//! the real registry behind it. One request per connection (`Connection: close`).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A fault to inject.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Reset the connection (RST) before answering.
    ResetBeforeResponse,
    /// Reset the connection after this many body bytes.
    ResetAfter(u64),
    /// Close the connection cleanly after this many body bytes (short body).
    Truncate(u64),
    /// Flip the bits of the body byte at this offset.
    Flip(u64),
    /// Answer with this status (and `Retry-After: N` when given) instead of forwarding.
    Status(u16, Option<u64>),
    /// Stop sending after this many body bytes and hold the connection until the client leaves.
    Stall(u64),
}

/// Applies `fault` to up to `times` requests whose path contains `path`.
#[derive(Clone, Debug)]
pub struct Rule {
    /// Substring of the request path.
    pub path: String,
    /// The fault.
    pub fault: Fault,
    /// How many requests it still applies to.
    pub times: usize,
}

/// One request seen.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// `Range` header, if any.
    pub range: Option<String>,
    /// Status sent (0 if the connection was reset before a status).
    pub status: u16,
    /// Body bytes sent.
    pub body_bytes: u64,
    /// The fault applied, if any.
    pub fault: Option<String>,
}

struct State {
    upstream: u16,
    port: u16,
    rules: Mutex<Vec<Rule>>,
    log: Mutex<Vec<Entry>>,
    bearer: Option<(String, String)>,
    stop: AtomicBool,
    body_bytes: AtomicU64,
    /// Connections being handled.
    active: AtomicUsize,
}

/// Counts a connection as active until dropped.
struct Active<'a>(&'a AtomicUsize);

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A running proxy, stopped on drop.
pub struct Proxy {
    /// Port on 127.0.0.1.
    pub port: u16,
    state: Arc<State>,
}

const TOKEN: &str = "proxy-test-token";

fn reset(s: &TcpStream) {
    let _ = rustix::net::sockopt::set_socket_linger(s, Some(Duration::ZERO));
}

fn read_head(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(1) => head.push(b[0]),
            _ => return None,
        }
        if head.len() == 1 && !b[0].is_ascii_uppercase() {
            // Not HTTP (a TLS handshake, say).
            return None;
        }
        if head.len() > 64 << 10 {
            return None;
        }
    }
    Some(head)
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

impl Proxy {
    /// A proxy to the registry on `upstream` (a 127.0.0.1 port).
    pub fn start(upstream: u16) -> Proxy {
        Proxy::start_with(upstream, None)
    }

    /// A proxy that requires bearer tokens, served by its own token endpoint to `user:pass`.
    pub fn start_with_bearer(upstream: u16, user: &str, pass: &str) -> Proxy {
        Proxy::start_with(upstream, Some((user.to_string(), pass.to_string())))
    }

    fn start_with(upstream: u16, bearer: Option<(String, String)>) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the proxy");
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(State {
            upstream,
            port,
            rules: Mutex::new(Vec::new()),
            log: Mutex::new(Vec::new()),
            bearer,
            stop: AtomicBool::new(false),
            body_bytes: AtomicU64::new(0),
            active: AtomicUsize::new(0),
        });
        let st = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                st.active.fetch_add(1, Ordering::SeqCst);
                let st = st.clone();
                std::thread::spawn(move || handle(&st, conn));
            }
        });
        Proxy { port, state }
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Adds a fault rule.
    pub fn add(&self, path: &str, fault: Fault, times: usize) {
        self.state.rules.lock().unwrap().push(Rule {
            path: path.to_string(),
            fault,
            times,
        });
    }

    /// Removes every rule.
    pub fn clear_rules(&self) {
        self.state.rules.lock().unwrap().clear();
    }

    /// Waits (up to 30 s) until no connection is being handled, so that every request a
    /// finished client made is in the log.
    fn settle(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while self.state.active.load(Ordering::SeqCst) > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The requests seen so far (once the connections in flight are done).
    pub fn log(&self) -> Vec<Entry> {
        self.settle();
        self.state.log.lock().unwrap().clone()
    }

    /// Forgets the requests seen (once the connections in flight are done).
    pub fn clear_log(&self) {
        self.settle();
        self.state.log.lock().unwrap().clear();
    }

    /// Body bytes sent so far (updated while streaming).
    pub fn body_bytes(&self) -> u64 {
        self.state.body_bytes.load(Ordering::SeqCst)
    }

    /// GETs of a blob (any range) seen.
    pub fn blob_gets(&self, digest: &str) -> Vec<Entry> {
        self.log()
            .into_iter()
            .filter(|e| e.method == "GET" && e.path.contains(&format!("/blobs/{digest}")))
            .collect()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn respond(c: &mut TcpStream, status: u16, extra: &str, body: &str) {
    let _ = write!(
        c,
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nContent-Type: application/json\r\nConnection: close\r\n{extra}\r\n{body}",
        body.len()
    );
}

fn handle(st: &State, mut c: TcpStream) {
    let _active = Active(&st.active);
    let Some(head) = read_head(&mut c) else {
        return;
    };
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut first = head.lines().next().unwrap_or("").split_whitespace();
    let method = first.next().unwrap_or("").to_string();
    let path = first.next().unwrap_or("").to_string();
    let mut entry = Entry {
        method,
        path: path.clone(),
        range: header(&head, "Range").map(str::to_string),
        status: 0,
        body_bytes: 0,
        fault: None,
    };
    let log = |e: Entry| st.log.lock().unwrap().push(e);

    let auth = header(&head, "Authorization").unwrap_or("").to_string();
    if let Some((user, pass)) = &st.bearer {
        use base64::Engine as _;
        if path.starts_with("/token") {
            let want = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
            );
            entry.status = if auth == want { 200 } else { 401 };
            if auth == want {
                respond(&mut c, 200, "", &format!("{{\"token\": \"{TOKEN}\"}}"));
            } else {
                respond(&mut c, 401, "", "{\"details\": \"bad credentials\"}");
            }
            log(entry);
            return;
        }
        if auth != format!("Bearer {TOKEN}") {
            let challenge = format!(
                "WWW-Authenticate: Bearer realm=\"http://127.0.0.1:{}/token\",service=\"proxy\"\r\n",
                st.port
            );
            respond(
                &mut c,
                401,
                &challenge,
                "{\"errors\":[{\"code\":\"UNAUTHORIZED\"}]}",
            );
            entry.status = 401;
            log(entry);
            return;
        }
    }

    let fault = {
        let mut rules = st.rules.lock().unwrap();
        rules
            .iter_mut()
            .find(|r| r.times > 0 && path.contains(&r.path))
            .map(|r| {
                r.times -= 1;
                r.fault.clone()
            })
    };
    entry.fault = fault.as_ref().map(|f| format!("{f:?}"));
    match fault {
        Some(Fault::ResetBeforeResponse) => {
            reset(&c);
            log(entry);
            return;
        }
        Some(Fault::Status(code, retry_after)) => {
            let extra = retry_after
                .map(|s| format!("Retry-After: {s}\r\n"))
                .unwrap_or_default();
            respond(
                &mut c,
                code,
                &extra,
                "{\"errors\":[{\"code\":\"UNAVAILABLE\",\"message\":\"injected\"}]}",
            );
            entry.status = code;
            log(entry);
            return;
        }
        _ => {}
    }

    // Forward: the request head with Authorization dropped in bearer mode and Connection: close.
    let Ok(mut up) = TcpStream::connect(("127.0.0.1", st.upstream)) else {
        reset(&c);
        log(entry);
        return;
    };
    let mut req = String::new();
    for (i, l) in head.split("\r\n").enumerate() {
        if l.is_empty() {
            continue;
        }
        if i > 0 {
            let name = l
                .split(':')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            if name == "connection" || (st.bearer.is_some() && name == "authorization") {
                continue;
            }
        }
        req += l;
        req += "\r\n";
    }
    req += "Connection: close\r\n\r\n";
    if up.write_all(req.as_bytes()).is_err() {
        reset(&c);
        log(entry);
        return;
    }
    let Some(rhead) = read_head(&mut up) else {
        reset(&c);
        log(entry);
        return;
    };
    let rhead = String::from_utf8_lossy(&rhead).into_owned();
    entry.status = rhead
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut out = String::new();
    for (i, l) in rhead.split("\r\n").enumerate() {
        if l.is_empty() {
            continue;
        }
        if i > 0 && l.to_ascii_lowercase().starts_with("connection:") {
            continue;
        }
        out += l;
        out += "\r\n";
    }
    out += "Connection: close\r\n\r\n";
    if c.write_all(out.as_bytes()).is_err() {
        log(entry);
        return;
    }
    let mut buf = vec![0u8; 64 << 10];
    let mut sent = 0u64;
    loop {
        let n = match up.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = &mut buf[..n];
        let (start, end) = (sent, sent + n as u64);
        let mut limit = n;
        let mut after: Option<&Fault> = None;
        match &fault {
            Some(Fault::Flip(k)) if *k >= start && *k < end => {
                chunk[(*k - start) as usize] ^= 0xff;
            }
            Some(f @ (Fault::ResetAfter(k) | Fault::Truncate(k) | Fault::Stall(k))) if *k < end => {
                limit = (*k - start.min(*k)) as usize;
                after = Some(f);
            }
            _ => {}
        }
        if c.write_all(&chunk[..limit]).is_err() {
            break;
        }
        sent += limit as u64;
        st.body_bytes.fetch_add(limit as u64, Ordering::SeqCst);
        match after {
            Some(Fault::ResetAfter(_)) => {
                reset(&c);
                break;
            }
            Some(Fault::Truncate(_)) => {
                let _ = c.shutdown(Shutdown::Both);
                break;
            }
            Some(Fault::Stall(_)) => {
                // Hold until the client goes away (it is killed) or the proxy stops.
                let _ = c.set_read_timeout(Some(Duration::from_millis(200)));
                let mut b = [0u8; 1];
                loop {
                    match c.read(&mut b) {
                        Ok(0) => break,
                        Ok(_) => {}
                        Err(e)
                            if e.kind() == std::io::ErrorKind::WouldBlock
                                || e.kind() == std::io::ErrorKind::TimedOut =>
                        {
                            if st.stop.load(Ordering::SeqCst) {
                                break;
                            }
                        }
                        Err(_) => break,
                    }
                }
                break;
            }
            _ => {}
        }
    }
    entry.body_bytes = sent;
    log(entry);
}
