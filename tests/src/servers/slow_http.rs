//! An HTTP server that serves one file slowly, so a test can act (delete the job, cut the
//! network) while a download or an install is under way. GET only, no Range: the simplest
//! server that a real client accepts.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::Duration;

use crate::servers::raw_http::{RawServer, read_head};

pub struct SlowServer {
    server: RawServer,
}

impl SlowServer {
    /// Serves `file` at any path, `chunk` bytes every `pause`.
    pub fn start(file: PathBuf, chunk: usize, pause: Duration) -> anyhow::Result<SlowServer> {
        let server = RawServer::start(move |mut s, stopped| {
            let _ = (|| -> std::io::Result<()> {
                if read_head(&mut s)?.is_none() {
                    return Ok(());
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
            })();
        })?;
        Ok(SlowServer { server })
    }

    pub fn url(&self, path: &str) -> String {
        self.server.url(path)
    }
}
