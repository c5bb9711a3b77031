//! A server-sent events parser (the `text/event-stream` format), fed bytes as they arrive.
//! wfx sends `data:` lines then `id:`, an empty line ending each event, and `: keepalive`
//! comments; the parser follows the WHATWG rules so that any conforming server works.

/// One event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

/// Longest line accepted: a server that sends endless data must not exhaust memory.
pub const MAX_LINE: usize = 256 << 10;
/// Largest event accepted (its data lines together): endless `data:` lines in one event must
/// not exhaust memory either. A wfx event holds one job: 1-2 KiB.
pub const MAX_EVENT: usize = 256 << 10;

/// What the parser refuses; the stream is then broken off.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TooLong {
    #[error("event stream line longer than {MAX_LINE} bytes")]
    Line,
    #[error("event stream event larger than {MAX_EVENT} bytes")]
    Event,
}

#[derive(Debug, Default)]
pub struct Parser {
    line: Vec<u8>,
    data: Vec<String>,
    /// Bytes of `data`, with the newlines that will join them.
    data_len: usize,
    id: Option<String>,
    event: Option<String>,
    /// A CR ended the last line: a following LF belongs to it.
    after_cr: bool,
    /// Comments seen (keepalives), so a caller can tell a live stream from a dead one.
    pub comments: u64,
    /// Lines completed (any kind): a stream that dribbles bytes without completing lines is not
    /// alive.
    pub lines: u64,
}

impl Parser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes; returns the events they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<Event>, TooLong> {
        let mut out = Vec::new();
        for &b in bytes {
            if self.after_cr {
                self.after_cr = false;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\n' | b'\r' => {
                    self.after_cr = b == b'\r';
                    let line = std::mem::take(&mut self.line);
                    self.lines += 1;
                    if let Some(e) = self.line_done(&line)? {
                        out.push(e);
                    }
                }
                _ if self.line.len() >= MAX_LINE => return Err(TooLong::Line),
                _ => self.line.push(b),
            }
        }
        Ok(out)
    }

    fn line_done(&mut self, line: &[u8]) -> Result<Option<Event>, TooLong> {
        if line.is_empty() {
            if self.data.is_empty() {
                self.event = None;
                return Ok(None);
            }
            self.data_len = 0;
            return Ok(Some(Event {
                id: self.id.clone(),
                event: self.event.take(),
                data: std::mem::take(&mut self.data).join("\n"),
            }));
        }
        let line = String::from_utf8_lossy(line);
        if line.starts_with(':') {
            self.comments += 1;
            return Ok(None);
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (&*line, ""),
        };
        match field {
            "data" => {
                self.data_len += value.len() + usize::from(!self.data.is_empty());
                if self.data_len > MAX_EVENT {
                    return Err(TooLong::Event);
                }
                self.data.push(value.to_owned());
            }
            "id" if !value.contains('\0') => self.id = Some(value.to_owned()),
            "event" => self.event = Some(value.to_owned()),
            _ => {} // "retry" and unknown fields
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wfx_shaped_stream_in_any_split() {
        let stream = b": keepalive\n\ndata: {\"action\":\"CREATE\"}\nid: 1\n\ndata: a\r\ndata: b\r\nid: 2\r\n\r\n";
        for split in 1..stream.len() {
            let mut p = Parser::new();
            let mut got = Vec::new();
            for c in stream.chunks(split) {
                got.extend(p.push(c).unwrap());
            }
            assert_eq!(
                got,
                [
                    Event {
                        id: Some("1".into()),
                        event: None,
                        data: "{\"action\":\"CREATE\"}".into()
                    },
                    Event {
                        id: Some("2".into()),
                        event: None,
                        data: "a\nb".into()
                    }
                ],
                "split {split}"
            );
            assert_eq!(p.comments, 1);
        }
    }

    #[test]
    fn event_names_no_space_and_unknown_fields() {
        let mut p = Parser::new();
        let e = p
            .push(b"event:update\ndata:x\nretry: 10\nfoo: bar\n\n")
            .unwrap();
        assert_eq!(e[0].event.as_deref(), Some("update"));
        assert_eq!(e[0].data, "x");
    }

    #[test]
    fn endless_line_is_an_error() {
        let mut p = Parser::new();
        let big = vec![b'x'; MAX_LINE + 1];
        assert_eq!(p.push(&big), Err(TooLong::Line));
    }

    #[test]
    fn endless_data_lines_in_one_event_are_an_error() {
        let mut p = Parser::new();
        let line = format!("data: {}\n", "x".repeat(1000));
        let mut fed = 0;
        let err = loop {
            match p.push(line.as_bytes()) {
                Ok(evs) => assert!(evs.is_empty()),
                Err(e) => break e,
            }
            fed += 1;
            assert!(fed <= MAX_EVENT / 1000 + 1, "no bound after {fed} lines");
        };
        assert_eq!(err, TooLong::Event);
        assert!(p.data_len <= MAX_EVENT + 1001);
    }

    #[test]
    fn an_event_at_the_bound_passes_and_the_count_starts_over() {
        let mut p = Parser::new();
        // Two lines joined by a newline: exactly MAX_EVENT bytes of data.
        let half = MAX_EVENT / 2;
        let text = format!(
            "data:{}\ndata:{}\n\n",
            "a".repeat(half),
            "b".repeat(half - 1)
        );
        for _ in 0..3 {
            let e = p.push(text.as_bytes()).unwrap();
            assert_eq!(e.len(), 1);
            assert_eq!(e[0].data.len(), MAX_EVENT);
        }
        let over = format!("data:{}\ndata:{}\n\n", "a".repeat(half), "b".repeat(half));
        assert_eq!(p.push(over.as_bytes()), Err(TooLong::Event));
    }

    #[test]
    fn lines_are_counted_but_not_a_dribbled_partial_line() {
        let mut p = Parser::new();
        p.push(b": keepalive\n\ndata: x").unwrap();
        assert_eq!(p.lines, 2);
        p.push(b"y").unwrap();
        assert_eq!(p.lines, 2);
        p.push(b"\n\n").unwrap();
        assert_eq!(p.lines, 4);
    }
}
