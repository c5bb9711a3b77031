//! The frame of the hand-written HTTP servers of the tests ([`crate::servers::slow_http`],
//! [`crate::fixtures::tuf::AttackServer`]): servers that misbehave on purpose (slowly, endlessly), which
//! nginx cannot be made to do. One thread per connection, one request per connection.

use std::io::{self, Read};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// A server on 127.0.0.1 that hands every connection to its handler, in a thread of its own,
/// until it is dropped. The handler gets the stop flag, to end long answers when the test ends.
pub struct RawServer {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl RawServer {
    pub fn start(
        handle: impl Fn(TcpStream, &AtomicBool) + Send + Sync + 'static,
    ) -> anyhow::Result<RawServer> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let port = listener.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let handle = Arc::new(handle);
        thread::spawn(move || {
            for conn in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(s) = conn else { continue };
                let (handle, stopped) = (handle.clone(), stopped.clone());
                thread::spawn(move || handle(s, &stopped));
            }
        });
        Ok(RawServer { port, stop })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>/<path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.port)
    }
}

impl Drop for RawServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port));
    }
}

/// Reads the request up to the end of its head (the blank line); None if the client hung up
/// before.
pub fn read_head(s: &mut impl Read) -> io::Result<Option<Vec<u8>>> {
    let mut req = Vec::new();
    let mut b = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut b)?;
        if n == 0 {
            return Ok(None);
        }
        req.extend_from_slice(&b[..n]);
    }
    Ok(Some(req))
}

/// Keeps the connection open, sending nothing, until the client hangs up, the test ends (`stop`)
/// or `at_most` has passed: the silent server of the timeout tests. Reads what the client sends
/// (and drops it) so that a hang-up is seen at once and the thread does not outlive the client.
pub fn hold(s: &mut TcpStream, stop: &AtomicBool, at_most: Duration) -> io::Result<()> {
    s.set_read_timeout(Some(Duration::from_millis(200)))?;
    let deadline = Instant::now() + at_most;
    let mut b = [0u8; 1024];
    while Instant::now() < deadline && !stop.load(Ordering::SeqCst) {
        match s.read(&mut b) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_head_stops_at_the_blank_line_or_at_eof() {
        let mut full: &[u8] = b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n";
        let head = read_head(&mut full).expect("read").expect("a head");
        assert!(head.starts_with(b"GET /x "));
        let mut cut: &[u8] = b"GET /x HTTP/1.1\r\nHost: a\r\n";
        assert!(read_head(&mut cut).expect("read").is_none());
    }
}
