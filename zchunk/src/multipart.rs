//! A streaming parser for `multipart/byteranges` answers (RFC 9110 14.6,
//! RFC 2046 5.1.1): fed the body in pieces of any size, it reports each part's
//! `Content-Range` and its bytes at their file offsets.
//!
//! Strict: a part must carry a valid `Content-Range`, its body is exactly as
//! long as that range says and must be followed by the next delimiter;
//! headers and the preamble are size-limited; anything else is an error. The
//! parser reads bodies by length, never searching them for the boundary, so
//! binary data cannot confuse it.

/// What the answer violated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed multipart/byteranges answer: {0}")]
pub struct MultipartError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, MultipartError> {
    Err(MultipartError(msg.into()))
}

/// Longest preamble skipped before the first delimiter.
const MAX_PREAMBLE: usize = 4096;
/// Longest header block of one part.
const MAX_PART_HEADERS: usize = 8192;

/// The boundary of a `Content-Type: multipart/byteranges; boundary=...` value.
pub fn boundary(content_type: &str) -> Result<String, MultipartError> {
    let mut params = content_type.split(';');
    let media = params.next().unwrap_or("").trim();
    if !media.eq_ignore_ascii_case("multipart/byteranges") {
        return err(format!(
            "content type is {media:?}, not multipart/byteranges"
        ));
    }
    for p in params {
        let Some((name, value)) = p.split_once('=') else {
            continue;
        };
        if !name.trim().eq_ignore_ascii_case("boundary") {
            continue;
        }
        let value = value.trim();
        let value = match value.strip_prefix('"') {
            Some(v) => v
                .strip_suffix('"')
                .ok_or_else(|| MultipartError("unterminated quoted boundary".into()))?,
            None => value,
        };
        // RFC 2046: 1 to 70 characters from a restricted set.
        let ok = |c: char| c.is_ascii_alphanumeric() || "'()+_,-./:=? ".contains(c);
        if value.is_empty() || value.len() > 70 || !value.chars().all(ok) || value.ends_with(' ') {
            return err(format!("invalid boundary {value:?}"));
        }
        return Ok(value.to_string());
    }
    err("no boundary parameter")
}

/// A `Content-Range: bytes first-last/total` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentRange {
    /// First byte of the range.
    pub start: u64,
    /// Inclusive, as in the header.
    pub last: u64,
    /// `None` for `*`.
    pub total: Option<u64>,
}

impl ContentRange {
    /// Bytes in the range.
    pub fn len(&self) -> u64 {
        self.last - self.start + 1
    }
    /// Never: a range holds at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }
}

fn number(s: &str, what: &str) -> Result<u64, MultipartError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return err(format!("Content-Range {what} {s:?} is not a number"));
    }
    s.parse()
        .map_err(|_| MultipartError(format!("Content-Range {what} {s:?} is too large")))
}

/// Parses a `Content-Range` value (of a part, or of a single-range 206 answer).
pub fn parse_content_range(value: &str) -> Result<ContentRange, MultipartError> {
    let v = value.trim();
    let rest = v
        .strip_prefix("bytes ")
        .ok_or_else(|| MultipartError(format!("Content-Range {v:?} is not in bytes")))?;
    let (range, total) = rest
        .split_once('/')
        .ok_or_else(|| MultipartError(format!("Content-Range {v:?} has no length")))?;
    let (first, last) = range
        .split_once('-')
        .ok_or_else(|| MultipartError(format!("Content-Range {v:?} has no range")))?;
    let start = number(first, "start")?;
    let last = number(last, "end")?;
    let total = if total == "*" {
        None
    } else {
        Some(number(total, "length")?)
    };
    if last < start {
        return err(format!("Content-Range {v:?} ends before it starts"));
    }
    if last == u64::MAX {
        // Its length (last - start + 1) would not fit in 64 bits.
        return err(format!("Content-Range {v:?} is too large"));
    }
    if let Some(t) = total {
        if last >= t {
            return err(format!("Content-Range {v:?} ends past the length"));
        }
    }
    Ok(ContentRange { start, last, total })
}

/// What the parser found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A part begins.
    Part(ContentRange),
    /// Bytes of the current part, at `offset` in the file.
    Data {
        /// Where the bytes are in the file.
        offset: u64,
        /// The bytes.
        data: Vec<u8>,
    },
    /// The closing delimiter was read.
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Preamble,
    AfterDelimiter,
    Headers,
    Body { offset: u64, remaining: u64 },
    Delimiter,
    Done,
}

/// The parser; feed it with [`Multipart::push`], end with [`Multipart::finish`].
pub struct Multipart {
    /// `--boundary`.
    dash_boundary: Vec<u8>,
    state: State,
    buf: Vec<u8>,
    /// Buffered bytes already searched for the current state's marker, so
    /// that input arriving in small pieces is not searched again and again.
    scanned: usize,
    parts: u64,
}

impl Multipart {
    /// A parser of a body whose parts are separated by `boundary`.
    pub fn new(boundary: &str) -> Multipart {
        let mut dash_boundary = b"--".to_vec();
        dash_boundary.extend_from_slice(boundary.as_bytes());
        Multipart {
            dash_boundary,
            state: State::Preamble,
            buf: Vec::new(),
            scanned: 0,
            parts: 0,
        }
    }

    /// Parts started so far.
    pub fn parts(&self) -> u64 {
        self.parts
    }

    /// Parses `input` (the next bytes of the body) and returns what it completed.
    pub fn push(&mut self, input: &[u8]) -> Result<Vec<Event>, MultipartError> {
        let mut events = Vec::new();
        let mut input = input;
        // Bodies pass straight through without buffering.
        loop {
            if let State::Body { offset, remaining } = self.state {
                if !self.buf.is_empty() {
                    let n = (self.buf.len() as u64).min(remaining) as usize;
                    let data: Vec<u8> = self.buf.drain(..n).collect();
                    self.advance_body(offset, remaining, data, &mut events);
                    continue;
                }
                if input.is_empty() {
                    return Ok(events);
                }
                let n = (input.len() as u64).min(remaining) as usize;
                self.advance_body(offset, remaining, input[..n].to_vec(), &mut events);
                input = &input[n..];
                continue;
            }
            if self.state == State::Done {
                // The epilogue is ignored.
                return Ok(events);
            }
            self.buf.extend_from_slice(input);
            input = &[];
            if !self.step(&mut events)? {
                return Ok(events);
            }
        }
    }

    fn advance_body(
        &mut self,
        offset: u64,
        remaining: u64,
        data: Vec<u8>,
        events: &mut Vec<Event>,
    ) {
        let n = data.len() as u64;
        if n > 0 {
            events.push(Event::Data { offset, data });
        }
        self.state = if n == remaining {
            State::Delimiter
        } else {
            State::Body {
                offset: offset + n,
                remaining: remaining - n,
            }
        };
    }

    /// One step on the buffered bytes; false when more input is needed.
    fn step(&mut self, events: &mut Vec<Event>) -> Result<bool, MultipartError> {
        match self.state {
            State::Preamble => {
                let d = &self.dash_boundary;
                let from = self.scanned.saturating_sub(d.len() + 2);
                let at = if self.buf.starts_with(d) {
                    Some(0)
                } else {
                    find(&self.buf[from..], b"\r\n", d).map(|i| from + i + 2)
                };
                self.scanned = self.buf.len();
                match at {
                    Some(i) => {
                        self.buf.drain(..i + d.len());
                        self.scanned = 0;
                        self.state = State::AfterDelimiter;
                        Ok(true)
                    }
                    None if self.buf.len() > MAX_PREAMBLE + d.len() + 2 => {
                        err("no delimiter where the first part should begin")
                    }
                    None => Ok(false),
                }
            }
            State::AfterDelimiter => {
                if self.buf.len() < 2 {
                    return Ok(false);
                }
                if self.buf.starts_with(b"--") {
                    self.buf.clear();
                    self.state = State::Done;
                    if self.parts == 0 {
                        return err("no parts");
                    }
                    events.push(Event::End);
                    return Ok(true);
                }
                // Transport padding (spaces, tabs) may precede the CRLF.
                let pad = self
                    .buf
                    .iter()
                    .take_while(|&&b| b == b' ' || b == b'\t')
                    .count();
                if pad > 64 {
                    return err("too much padding after a delimiter");
                }
                if self.buf.len() < pad + 2 {
                    return Ok(false);
                }
                if &self.buf[pad..pad + 2] != b"\r\n" {
                    return err("delimiter not followed by CRLF");
                }
                self.buf.drain(..pad + 2);
                self.state = State::Headers;
                Ok(true)
            }
            State::Headers => {
                let from = self.scanned.saturating_sub(4);
                let found = find_plain(&self.buf[from..], b"\r\n\r\n").map(|i| from + i);
                self.scanned = self.buf.len();
                let Some(end) = found else {
                    if self.buf.len() > MAX_PART_HEADERS {
                        return err("part headers too long");
                    }
                    // A part with no headers at all has no Content-Range.
                    if self.buf.starts_with(b"\r\n") {
                        return err("part without Content-Range");
                    }
                    return Ok(false);
                };
                if end > MAX_PART_HEADERS {
                    return err("part headers too long");
                }
                let block: Vec<u8> = self.buf.drain(..end + 4).collect();
                self.scanned = 0;
                let range = part_range(&block[..end])?;
                self.parts += 1;
                events.push(Event::Part(range));
                self.state = State::Body {
                    offset: range.start,
                    remaining: range.len(),
                };
                Ok(true)
            }
            State::Delimiter => {
                let need = 2 + self.dash_boundary.len();
                if self.buf.len() < need {
                    return Ok(false);
                }
                if !self.buf.starts_with(b"\r\n") || self.buf[2..need] != self.dash_boundary[..] {
                    return err("part body longer than its Content-Range, or delimiter missing");
                }
                self.buf.drain(..need);
                self.state = State::AfterDelimiter;
                Ok(true)
            }
            State::Body { .. } | State::Done => Ok(false),
        }
    }

    /// Checks that the answer ended after its closing delimiter.
    pub fn finish(&self) -> Result<(), MultipartError> {
        match self.state {
            State::Done => Ok(()),
            State::Body { remaining, .. } => err(format!(
                "answer ended inside a part, {remaining} bytes short"
            )),
            _ => err("answer ended before the closing delimiter"),
        }
    }
}

fn part_range(block: &[u8]) -> Result<ContentRange, MultipartError> {
    let text = std::str::from_utf8(block)
        .map_err(|_| MultipartError("part headers are not UTF-8".into()))?;
    let mut range = None;
    for line in text.split("\r\n") {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| MultipartError(format!("malformed part header {line:?}")))?;
        if name.trim().eq_ignore_ascii_case("content-range") {
            if range.is_some() {
                return err("two Content-Range headers in one part");
            }
            range = Some(parse_content_range(value)?);
        }
    }
    range.ok_or_else(|| MultipartError("part without Content-Range".into()))
}

/// Index of `prefix` + `needle` in `hay` (the index of `prefix`).
fn find(hay: &[u8], prefix: &[u8], needle: &[u8]) -> Option<usize> {
    let n = prefix.len() + needle.len();
    hay.windows(n)
        .position(|w| w.starts_with(prefix) && w[prefix.len()..] == *needle)
}

fn find_plain(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(boundary: &str, body: &[u8], piece: usize) -> Result<Vec<Event>, MultipartError> {
        let mut p = Multipart::new(boundary);
        let mut events = Vec::new();
        for chunk in body.chunks(piece.max(1)) {
            events.extend(p.push(chunk)?);
        }
        p.finish()?;
        Ok(events)
    }

    /// The bytes of each part, joined per part.
    fn parts(events: &[Event]) -> Vec<(ContentRange, Vec<u8>)> {
        let mut out: Vec<(ContentRange, Vec<u8>)> = Vec::new();
        for e in events {
            match e {
                Event::Part(r) => out.push((*r, Vec::new())),
                Event::Data { offset, data } => {
                    let (r, bytes) = out.last_mut().unwrap();
                    assert_eq!(*offset, r.start + bytes.len() as u64);
                    bytes.extend_from_slice(data);
                }
                Event::End => {}
            }
        }
        out
    }

    const GOOD: &[u8] = b"\r\n--B0\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes 0-4/20\r\n\r\nhello\r\n--B0\r\nContent-Range: bytes 10-12/20\r\n\r\n\r\n-\r\n--B0--\r\n";

    #[test]
    fn parses_parts_in_any_piece_size() {
        for piece in [1, 2, 3, 7, 1000] {
            let ev = parse_all("B0", GOOD, piece).unwrap();
            let p = parts(&ev);
            assert_eq!(p.len(), 2, "piece {piece}");
            assert_eq!(
                p[0].0,
                ContentRange {
                    start: 0,
                    last: 4,
                    total: Some(20)
                }
            );
            assert_eq!(p[0].1, b"hello");
            // Body bytes that look like CRLF and dashes are data, not structure.
            assert_eq!(p[1].1, b"\r\n-");
            assert_eq!(ev.last(), Some(&Event::End));
        }
    }

    #[test]
    fn boundary_from_content_type() {
        assert_eq!(
            boundary("multipart/byteranges; boundary=00000000001").unwrap(),
            "00000000001"
        );
        assert_eq!(
            boundary("Multipart/ByteRanges;charset=x; boundary=\"a b\"").unwrap(),
            "a b"
        );
        assert!(boundary("multipart/mixed; boundary=x").is_err());
        assert!(boundary("multipart/byteranges").is_err());
        assert!(boundary("multipart/byteranges; boundary=").is_err());
        assert!(boundary("multipart/byteranges; boundary=\"x").is_err());
        assert!(
            boundary(&format!(
                "multipart/byteranges; boundary={}",
                "x".repeat(71)
            ))
            .is_err()
        );
    }

    #[test]
    fn content_range_values() {
        assert_eq!(
            parse_content_range("bytes 5-9/*").unwrap(),
            ContentRange {
                start: 5,
                last: 9,
                total: None
            }
        );
        for bad in [
            "bytes 9-5/20",
            "bytes 0-20/20",
            "bytes -1-5/20",
            "bytes 0-5",
            "items 0-5/9",
            "bytes 0-99999999999999999999/*",
            "bytes a-5/9",
            "bytes 0-5/",
            "bytes +1-5/9",
        ] {
            assert!(parse_content_range(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn malformed_answers_are_errors() {
        let cases: &[(&str, &[u8])] = &[
            ("truncated body", b"--B0\r\nContent-Range: bytes 0-4/20\r\n\r\nhel"),
            ("no closing delimiter", b"--B0\r\nContent-Range: bytes 0-4/20\r\n\r\nhello\r\n--B0\r\n"),
            ("body longer than range", b"--B0\r\nContent-Range: bytes 0-4/20\r\n\r\nhello!\r\n--B0--"),
            ("no content-range", b"--B0\r\nContent-Type: x\r\n\r\nhello\r\n--B0--"),
            ("no headers", b"--B0\r\n\r\nhello\r\n--B0--"),
            ("bad header line", b"--B0\r\nContent-Range bytes 0-4/20\r\n\r\nhello\r\n--B0--"),
            ("two ranges", b"--B0\r\nContent-Range: bytes 0-4/20\r\nContent-Range: bytes 0-4/20\r\n\r\nhello\r\n--B0--"),
            ("wrong boundary", b"--B1\r\nContent-Range: bytes 0-4/20\r\n\r\nhello\r\n--B1--"),
            ("garbage after delimiter", b"--B0xx\r\nContent-Range: bytes 0-4/20\r\n\r\nhello\r\n--B0--"),
            ("no parts", b"--B0--\r\n"),
            ("empty", b""),
        ];
        for (name, body) in cases {
            assert!(parse_all("B0", body, 3).is_err(), "{name} accepted");
        }
        // Oversized preamble and headers are refused without buffering forever.
        let mut long = vec![b'x'; 10_000];
        long.extend_from_slice(GOOD);
        assert!(parse_all("B0", &long, 100).is_err());
        let mut hdr = b"--B0\r\nX: ".to_vec();
        hdr.extend(vec![b'a'; 10_000]);
        assert!(parse_all("B0", &hdr, 100).is_err());
    }
}
