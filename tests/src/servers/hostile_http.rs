//! An artifact server that misbehaves on purpose, for the tests of the agent's download bounds:
//! it never answers, answers its headers and then nothing, dribbles, or sends without end. It
//! counts the bytes it managed to send, so that a test can show where the agent stopped reading.

use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use crate::servers::raw_http::{RawServer, hold, read_head};

/// How the server answers every request.
#[derive(Clone, Debug)]
pub enum Behaviour {
    /// Reads the request, then sends nothing, the connection held open.
    Silent,
    /// The headers of `body` (its Content-Length), then nothing.
    HeadersThenSilence(Vec<u8>),
    /// `body` (with its Content-Length), one byte every `pause`.
    Dribble(Vec<u8>, Duration),
    /// `prefix`, then bytes `fill` without end (no Content-Length), as fast as the client
    /// reads.
    Endless { prefix: Vec<u8>, fill: u8 },
}

/// How long a held connection is kept at most: beyond any test's patience, so that a client
/// without limits cannot keep a thread forever.
const HOLD: Duration = Duration::from_secs(300);
/// Most bytes an endless answer sends (a client without any limit stops the thread here).
const ENDLESS_MAX: u64 = 8 << 30;

pub struct HostileServer {
    server: RawServer,
    sent: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
}

impl HostileServer {
    pub fn start(behaviour: Behaviour) -> anyhow::Result<HostileServer> {
        let sent = Arc::new(AtomicU64::new(0));
        let requests = Arc::new(AtomicU64::new(0));
        let (s2, r2) = (sent.clone(), requests.clone());
        let server = RawServer::start(move |s, stopped| {
            let _ = serve(s, &behaviour, stopped, &s2, &r2);
        })?;
        Ok(HostileServer {
            server,
            sent,
            requests,
        })
    }

    /// `http://127.0.0.1:<port>/<path>`.
    pub fn url(&self, path: &str) -> String {
        self.server.url(path)
    }

    /// Body bytes the server has written to its sockets so far (all connections).
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }

    /// Requests received so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }
}

fn serve(
    mut s: TcpStream,
    behaviour: &Behaviour,
    stop: &AtomicBool,
    sent: &AtomicU64,
    requests: &AtomicU64,
) -> std::io::Result<()> {
    if read_head(&mut s)?.is_none() {
        return Ok(());
    }
    requests.fetch_add(1, Ordering::SeqCst);
    let headers = |s: &mut TcpStream, len: usize| {
        write!(
            s,
            "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
        )
        .and_then(|()| s.flush())
    };
    match behaviour {
        Behaviour::Silent => hold(&mut s, stop, HOLD),
        Behaviour::HeadersThenSilence(body) => {
            headers(&mut s, body.len())?;
            hold(&mut s, stop, HOLD)
        }
        Behaviour::Dribble(body, pause) => {
            headers(&mut s, body.len())?;
            for byte in body.chunks(1) {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                s.write_all(byte)?;
                s.flush()?;
                sent.fetch_add(1, Ordering::SeqCst);
                thread::sleep(*pause);
            }
            Ok(())
        }
        Behaviour::Endless { prefix, fill } => {
            s.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")?;
            s.write_all(prefix)?;
            sent.fetch_add(prefix.len() as u64, Ordering::SeqCst);
            let block = vec![*fill; 64 * 1024];
            while sent.load(Ordering::SeqCst) < ENDLESS_MAX && !stop.load(Ordering::SeqCst) {
                // Fails once the client hangs up.
                s.write_all(&block)?;
                sent.fetch_add(block.len() as u64, Ordering::SeqCst);
            }
            Ok(())
        }
    }
}
