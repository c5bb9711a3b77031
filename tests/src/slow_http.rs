//! An HTTP server that serves one file slowly, so a test can act (delete the job, cut the
//! network) while a download or an install is under way. GET only, no Range: the simplest
//! server that a real client accepts.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

pub struct SlowServer {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl SlowServer {
    /// Serves `file` at any path, `chunk` bytes every `pause`.
    pub fn start(file: PathBuf, chunk: usize, pause: Duration) -> anyhow::Result<SlowServer> {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let port = l.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        thread::spawn(move || {
            for conn in l.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut s) = conn else { continue };
                let (file, stopped) = (file.clone(), stopped.clone());
                thread::spawn(move || -> std::io::Result<()> {
                    let mut req = Vec::new();
                    let mut b = [0u8; 1024];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        let n = s.read(&mut b)?;
                        if n == 0 {
                            return Ok(());
                        }
                        req.extend_from_slice(&b[..n]);
                    }
                    let data = std::fs::read(&file)?;
                    write!(
                        s,
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        data.len()
                    )?;
                    for c in data.chunks(chunk) {
                        if stopped.load(Ordering::SeqCst) {
                            return Ok(());
                        }
                        s.write_all(c)?;
                        thread::sleep(pause);
                    }
                    Ok(())
                });
            }
        });
        Ok(SlowServer { port, stop })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.port)
    }
}

impl Drop for SlowServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, self.port));
    }
}
