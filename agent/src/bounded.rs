//! Reading an HTTP answer's body with bounds: at most so many bytes, and no silence longer than
//! the stall bound between two pieces. A server is not trusted to end what it sends (an endless
//! or huge body must not exhaust memory) nor to send it at all (a silent one must not hold the
//! agent).

use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};

/// Why a body was not read whole.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BodyError {
    #[error("answer larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("answer stalled: nothing received for {0:?}")]
    Stalled(Duration),
    #[error("answer too slow: not whole after {0:?}")]
    TooSlow(Duration),
    #[error("{0}")]
    Network(String),
}

/// The limits of one read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// Most bytes accepted.
    pub limit: usize,
    /// Longest wait for the next piece.
    pub stall: Duration,
    /// Longest time for the whole body (a dribble that never stalls ends too).
    pub total: Duration,
}

/// Reads the whole body, failing past `bounds.limit` bytes (told by `Content-Length` at once,
/// else while streaming, without buffering more than the limit), a stall or the total time.
pub async fn read(resp: reqwest::Response, bounds: Bounds) -> Result<Vec<u8>, BodyError> {
    if resp
        .content_length()
        .is_some_and(|n| n > bounds.limit as u64)
    {
        return Err(BodyError::TooLarge {
            limit: bounds.limit,
        });
    }
    read_stream(resp.bytes_stream(), bounds, false).await
}

/// Reads at most `bounds.limit` bytes of the body and drops the rest unread (for error answers,
/// of which only the beginning is shown); a stall, the total time or a broken connection ends it
/// too, with what came until then.
pub async fn read_prefix(resp: reqwest::Response, bounds: Bounds) -> Vec<u8> {
    let mut buf = Vec::new();
    let _ = read_into(resp.bytes_stream(), bounds, true, &mut buf).await;
    buf
}

/// [`read`] on any stream of pieces (`truncate`: stop at the limit instead of failing).
pub async fn read_stream<E: std::fmt::Display>(
    body: impl Stream<Item = Result<Bytes, E>>,
    bounds: Bounds,
    truncate: bool,
) -> Result<Vec<u8>, BodyError> {
    let mut buf = Vec::new();
    read_into(body, bounds, truncate, &mut buf).await?;
    Ok(buf)
}

async fn read_into<E: std::fmt::Display>(
    body: impl Stream<Item = Result<Bytes, E>>,
    bounds: Bounds,
    truncate: bool,
    buf: &mut Vec<u8>,
) -> Result<(), BodyError> {
    let mut body = std::pin::pin!(body);
    let end = tokio::time::Instant::now() + bounds.total;
    loop {
        let stall = tokio::time::Instant::now() + bounds.stall;
        let piece = tokio::time::timeout_at(stall.min(end), body.next())
            .await
            .map_err(|_| {
                if stall < end {
                    BodyError::Stalled(bounds.stall)
                } else {
                    BodyError::TooSlow(bounds.total)
                }
            })?;
        match piece {
            None => return Ok(()),
            Some(Err(e)) => return Err(BodyError::Network(e.to_string())),
            Some(Ok(piece)) => {
                if !append(buf, &piece, bounds.limit) {
                    return if truncate {
                        Ok(())
                    } else {
                        Err(BodyError::TooLarge {
                            limit: bounds.limit,
                        })
                    };
                }
            }
        }
    }
}

/// Appends what fits under `limit`; false when `piece` did not fit whole.
fn append(buf: &mut Vec<u8>, piece: &[u8], limit: usize) -> bool {
    let room = limit.saturating_sub(buf.len());
    let take = piece.len().min(room);
    buf.extend_from_slice(&piece[..take]);
    take == piece.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::stream;

    const B: Bounds = Bounds {
        limit: 10,
        stall: Duration::from_millis(50),
        total: Duration::from_secs(5),
    };

    fn run<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    fn pieces(p: &[&'static [u8]]) -> impl Stream<Item = Result<Bytes, String>> {
        stream::iter(
            p.iter()
                .map(|b| Ok(Bytes::from_static(b)))
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn whole_body_up_to_the_limit() {
        run(async {
            let got = read_stream(pieces(&[b"01234", b"56789"]), B, false).await;
            assert_eq!(got.unwrap(), b"0123456789");
        })
    }

    #[test]
    fn one_byte_over_is_an_error_or_cut() {
        run(async {
            let p = [b"01234".as_slice(), b"56789", b"x"];
            assert_eq!(
                read_stream(pieces(&p), B, false).await,
                Err(BodyError::TooLarge { limit: 10 })
            );
            assert_eq!(
                read_stream(pieces(&p), B, true).await.unwrap(),
                b"0123456789"
            );
        })
    }

    #[test]
    fn endless_body_stops_at_the_limit() {
        run(async {
            let endless =
                stream::repeat_with(|| Ok::<_, String>(Bytes::from_static(&[b'x'; 4096])));
            let big = Bounds {
                limit: 1 << 20,
                ..B
            };
            assert_eq!(
                read_stream(endless, big, false).await,
                Err(BodyError::TooLarge { limit: 1 << 20 })
            );
        })
    }

    #[test]
    fn silence_is_a_stall() {
        run(async {
            let silent = stream::pending::<Result<Bytes, String>>();
            let got = read_stream(silent, B, false).await;
            assert_eq!(got, Err(BodyError::Stalled(Duration::from_millis(50))));
            // Pieces, then silence: a stall as well, nothing kept.
            let then_silent = pieces(&[b"ab"]).chain(stream::pending());
            assert_eq!(
                read_stream(then_silent, B, false).await,
                Err(BodyError::Stalled(Duration::from_millis(50)))
            );
        })
    }

    #[test]
    fn a_dribble_that_never_stalls_ends_at_the_total_time() {
        run(async {
            let dribble = stream::unfold((), |()| async {
                tokio::time::sleep(Duration::from_millis(10)).await;
                Some((Ok::<_, String>(Bytes::from_static(b"")), ()))
            });
            let b = Bounds {
                total: Duration::from_millis(200),
                ..B
            };
            let started = std::time::Instant::now();
            assert_eq!(
                read_stream(dribble, b, false).await,
                Err(BodyError::TooSlow(Duration::from_millis(200)))
            );
            assert!(started.elapsed() < Duration::from_secs(2));
        })
    }

    #[test]
    fn broken_connection_is_a_network_error() {
        run(async {
            let broken = stream::iter(vec![
                Ok(Bytes::from_static(b"ab")),
                Err("connection reset".to_owned()),
            ]);
            assert_eq!(
                read_stream(broken, B, false).await,
                Err(BodyError::Network("connection reset".into()))
            );
        })
    }
}
