//! A fault-injecting HTTP proxy: forwards each request to an upstream server on 127.0.0.1 (nginx)
//! and cuts the connection at a random point of the answer for the first `cuts` eligible
//! requests. Every exchange is logged with the request head and the answer bytes that really
//! reached the client, so a test can tell which bytes a client received (and how often).
//!
//! One request per connection (`Connection: close` is forced upstream): the log maps one to one
//! to requests, and a cut ends exactly one.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

/// One request and what went back.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// The request head as the client sent it.
    pub request: String,
    /// Its `Range` header.
    pub range: Option<String>,
    /// The answer's bytes (head and body) that reached the client.
    pub response: Vec<u8>,
    /// Whether the proxy cut this answer short.
    pub cut: bool,
}

impl Exchange {
    /// The answer's head and the body bytes received.
    pub fn split(&self) -> (String, &[u8]) {
        match self.response.windows(4).position(|w| w == b"\r\n\r\n") {
            Some(i) => (
                String::from_utf8_lossy(&self.response[..i]).into_owned(),
                &self.response[i + 4..],
            ),
            None => (String::from_utf8_lossy(&self.response).into_owned(), &[]),
        }
    }

    /// A header of the answer (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<String> {
        let (head, _) = self.split();
        head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    }
}

/// Which requests may be cut.
pub type Eligible = Arc<dyn Fn(&str) -> bool + Send + Sync>;

pub struct CutProxy {
    port: u16,
    log: Arc<Mutex<Vec<Exchange>>>,
    stop: Arc<AtomicBool>,
}

struct Plan {
    left: Mutex<usize>,
    rng: Mutex<u64>,
    eligible: Eligible,
}

impl Plan {
    /// A number in `lo..hi` (xorshift; the seed is printed by the test for a rerun).
    fn pick(&self, lo: u64, hi: u64) -> u64 {
        let mut s = self.rng.lock().unwrap();
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        lo + *s % (hi - lo).max(1)
    }

    fn take_cut(&self, request: &str) -> bool {
        if !(self.eligible)(request) {
            return false;
        }
        let mut l = self.left.lock().unwrap();
        if *l == 0 {
            return false;
        }
        *l -= 1;
        true
    }
}

impl CutProxy {
    /// Proxies to `127.0.0.1:upstream`; cuts the answers of the first `cuts` requests for which
    /// `eligible(request head)` holds, each at a random point of its body.
    pub fn start(
        upstream: u16,
        cuts: usize,
        seed: u64,
        eligible: Eligible,
    ) -> anyhow::Result<CutProxy> {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let port = l.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let plan = Arc::new(Plan {
            left: Mutex::new(cuts),
            rng: Mutex::new(seed.max(1)),
            eligible,
        });
        let (stopped, logged) = (stop.clone(), log.clone());
        thread::spawn(move || {
            for conn in l.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(s) = conn else { continue };
                let (plan, log) = (plan.clone(), logged.clone());
                thread::spawn(move || {
                    if let Some(x) = serve(s, upstream, &plan) {
                        log.lock().unwrap().push(x);
                    }
                });
            }
        });
        Ok(CutProxy { port, log, stop })
    }

    pub fn url(&self, path: &str) -> String {
        format!(
            "http://127.0.0.1:{}/{}",
            self.port,
            path.trim_start_matches('/')
        )
    }

    /// The exchanges so far, in the order they ended.
    pub fn exchanges(&self) -> Vec<Exchange> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port));
    }
}

fn serve(mut client: TcpStream, upstream: u16, plan: &Plan) -> Option<Exchange> {
    let mut head = Vec::new();
    let mut b = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = client.read(&mut b).ok()?;
        if n == 0 {
            return None;
        }
        head.extend_from_slice(&b[..n]);
    }
    let request = String::from_utf8_lossy(&head).into_owned();
    let range = request.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case("range").then(|| v.trim().to_owned())
    });
    let mut forwarded: String = request
        .trim_end()
        .lines()
        .filter(|l| {
            !l.to_ascii_lowercase().starts_with("connection:")
                && !l.to_ascii_lowercase().starts_with("keep-alive:")
        })
        .map(|l| format!("{l}\r\n"))
        .collect();
    forwarded.push_str("Connection: close\r\n\r\n");
    let mut up = TcpStream::connect((Ipv4Addr::LOCALHOST, upstream)).ok()?;
    up.write_all(forwarded.as_bytes()).ok()?;
    let cut_planned = plan.take_cut(&request);
    let mut response = Vec::new();
    let mut cut_at: Option<usize> = None;
    let mut cut = false;
    loop {
        let n = match up.read(&mut b) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut piece = &b[..n];
        if cut_planned && cut_at.is_none() {
            // Once the head is in: a point inside the body.
            let mut seen = response.clone();
            seen.extend_from_slice(piece);
            if let Some(i) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&seen[..i]).to_ascii_lowercase();
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .unwrap_or(2);
                cut_at = Some(i + 4 + plan.pick(1, len.max(2)) as usize);
            }
        }
        if let Some(at) = cut_at {
            if response.len() + piece.len() >= at {
                piece = &piece[..at - response.len()];
                cut = true;
            }
        }
        response.extend_from_slice(piece);
        if client.write_all(piece).is_err() || cut {
            break;
        }
    }
    let _ = client.shutdown(Shutdown::Both);
    let _ = up.shutdown(Shutdown::Both);
    Some(Exchange {
        request,
        range,
        response,
        cut,
    })
}
