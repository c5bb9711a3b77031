//! Follows the cpio structure of a `.swu` as it streams past, without holding it.
//!
//! SWUpdate judges the content; this only knows where the archive should end, so that an image
//! cut short (a truncated file, a download that stopped) is named as such, with the entry it ends
//! in, instead of surfacing as a bare FAILURE from the daemon; and so that an image that does not
//! end (endless data after the trailer, an entry claiming more than the size limit) is stopped
//! where the archive ends, or as soon as its claim is read.

use std::fmt;

/// Size of a newc/crc header.
const HEADER: usize = 110;
/// Longest name accepted; SWUpdate's own limit is far lower.
const MAX_NAME: usize = 4096;
const TRAILER: &str = "TRAILER!!!";
/// Bytes accepted after the trailer: cpio pads an archive to its block size (512 bytes for
/// newc, more with a larger block); what comes beyond this is not part of the archive.
pub const AFTER_TRAILER: u64 = 64 * 1024;

/// What is wrong with the archive.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SwuError {
    /// The bytes are not a cpio archive SWUpdate reads.
    #[error(
        "not a .swu: {what} at byte {offset} (a .swu is a cpio archive in the newc or crc format)"
    )]
    NotCpio {
        /// Where in the stream.
        offset: u64,
        /// What was found.
        what: String,
    },
    /// The first entry is not `sw-description`: its name.
    #[error("not a .swu: its first entry is `{0}`, a .swu starts with sw-description")]
    FirstEntry(String),
    /// The stream ended inside the archive.
    #[error("the .swu is truncated at byte {offset}: {}", truncation(*.missing, .place))]
    Truncated {
        /// Where it ended.
        offset: u64,
        /// Bytes of the current part still expected.
        missing: u64,
        /// Which part.
        place: Place,
    },
    /// The archive is (or says it is) larger than allowed.
    #[error("the .swu is larger than the {max}-byte limit (download.max_image_size): {what}")]
    TooLarge {
        /// The limit in bytes.
        max: u64,
        /// What showed it.
        what: String,
    },
}

fn truncation(missing: u64, place: &Place) -> String {
    match place {
        Place::NoTrailer => "its cpio trailer is missing".into(),
        _ => format!("{missing} more bytes of {place} were expected"),
    }
}

/// Where in the archive the stream stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Place {
    /// An entry's header.
    Header,
    /// An entry's name.
    Name,
    /// The data of the named entry.
    Data(String),
    /// Between entries: the archive lacks its trailer.
    NoTrailer,
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::Header => f.write_str("an entry header"),
            Place::Name => f.write_str("an entry name"),
            Place::Data(n) => write!(f, "the data of `{n}`"),
            Place::NoTrailer => f.write_str("the cpio trailer"),
        }
    }
}

#[derive(Debug, Clone)]
enum State {
    /// Collecting a header (110 bytes).
    Header,
    /// Collecting the name and the padding after it.
    Name { len: usize, pad: usize },
    /// Skipping data and its padding.
    Data { left: u64, pad: u64 },
    /// After the trailer: padding, ignored.
    Done,
}

/// The tracker; feed it every byte in order.
#[derive(Debug)]
pub struct SwuTracker {
    state: State,
    buf: Vec<u8>,
    offset: u64,
    entries: usize,
    current: String,
    filesize: u64,
    /// The largest archive accepted.
    max: u64,
    /// Bytes seen after the trailer.
    after: u64,
}

impl Default for SwuTracker {
    fn default() -> Self {
        SwuTracker {
            state: State::Header,
            buf: Vec::with_capacity(HEADER),
            offset: 0,
            entries: 0,
            current: String::new(),
            filesize: 0,
            max: u64::MAX,
            after: 0,
        }
    }
}

fn pad4(n: u64) -> u64 {
    (4 - n % 4) % 4
}

fn hex_field(h: &[u8], i: usize) -> Option<u64> {
    let f = std::str::from_utf8(&h[6 + i * 8..6 + i * 8 + 8]).ok()?;
    u64::from_str_radix(f, 16).ok()
}

impl SwuTracker {
    /// A tracker at the start of an archive, without a size limit.
    pub fn new() -> Self {
        Self::default()
    }

    /// A tracker that refuses an archive (or an entry's claim) beyond `max` bytes.
    pub fn with_max(max: u64) -> Self {
        SwuTracker {
            max,
            ..Self::default()
        }
    }

    /// Bytes of the archive taken so far (padding after the trailer included).
    pub fn offset(&self) -> u64 {
        self.offset + self.after
    }

    /// The archive is over: its trailer and all the padding accepted after it were seen, so
    /// no further byte belongs to it.
    pub fn ended(&self) -> bool {
        self.complete() && self.after >= AFTER_TRAILER
    }

    /// Entries seen so far, the trailer not counted.
    pub fn entries(&self) -> usize {
        self.entries
    }

    /// The archive's trailer was seen.
    pub fn complete(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Takes the next bytes of the stream; how many of them belong to the archive: all of them
    /// but what comes after the trailer and [`AFTER_TRAILER`] bytes of padding.
    pub fn feed(&mut self, data: &[u8]) -> Result<usize, SwuError> {
        let total = data.len();
        let left = self.feed_archive(data)?;
        let room = AFTER_TRAILER.saturating_sub(self.after);
        let padding = (left as u64).min(room);
        self.after += padding;
        if self.offset() > self.max {
            return Err(SwuError::TooLarge {
                max: self.max,
                what: format!("it goes on past byte {}", self.max),
            });
        }
        Ok(total - left + padding as usize)
    }

    /// Follows the archive up to its trailer; the number of bytes of `data` left after it.
    fn feed_archive(&mut self, mut data: &[u8]) -> Result<usize, SwuError> {
        while !data.is_empty() {
            match self.state.clone() {
                State::Done => return Ok(data.len()),
                State::Header => {
                    let take = (HEADER - self.buf.len()).min(data.len());
                    self.buf.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    self.offset += take as u64;
                    if self.buf.len() == HEADER {
                        self.parse_header()?;
                    }
                }
                State::Name { len, pad } => {
                    let want = len + pad;
                    let take = (want - self.buf.len()).min(data.len());
                    self.buf.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    self.offset += take as u64;
                    if self.buf.len() == want {
                        self.end_name(len)?;
                    }
                }
                State::Data { left, pad } => {
                    let take = (left + pad).min(data.len() as u64);
                    data = &data[take as usize..];
                    self.offset += take;
                    let rest = left + pad - take;
                    self.state = if rest == 0 {
                        self.buf.clear();
                        State::Header
                    } else if rest > pad {
                        State::Data {
                            left: rest - pad,
                            pad,
                        }
                    } else {
                        State::Data { left: 0, pad: rest }
                    };
                }
            }
        }
        Ok(0)
    }

    fn parse_header(&mut self) -> Result<(), SwuError> {
        let start = self.offset - HEADER as u64;
        let h = &self.buf;
        if &h[..6] != b"070701" && &h[..6] != b"070702" {
            return Err(SwuError::NotCpio {
                offset: start,
                what: format!(
                    "no cpio header (found {:?})",
                    String::from_utf8_lossy(&h[..6])
                ),
            });
        }
        let bad = |what: &str| SwuError::NotCpio {
            offset: start,
            what: what.into(),
        };
        // Fields: ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize check
        let filesize = hex_field(h, 6).ok_or_else(|| bad("a cpio header with a bad filesize"))?;
        let namesize = hex_field(h, 11).ok_or_else(|| bad("a cpio header with a bad namesize"))?;
        if namesize == 0 || namesize as usize > MAX_NAME {
            return Err(bad("a cpio header with an impossible name size"));
        }
        self.filesize = filesize;
        let len = namesize as usize;
        let pad = pad4(HEADER as u64 + namesize) as usize;
        self.buf.clear();
        self.state = State::Name { len, pad };
        Ok(())
    }

    fn end_name(&mut self, len: usize) -> Result<(), SwuError> {
        let raw = &self.buf[..len];
        let name = String::from_utf8_lossy(raw.strip_suffix(b"\0").unwrap_or(raw)).into_owned();
        self.buf.clear();
        if name == TRAILER {
            self.state = State::Done;
            return Ok(());
        }
        if self.entries == 0 && name != "sw-description" {
            return Err(SwuError::FirstEntry(name));
        }
        let end = self.offset.saturating_add(self.filesize);
        if end > self.max {
            return Err(SwuError::TooLarge {
                max: self.max,
                what: format!(
                    "its entry `{}` claims {} bytes, ending at byte {end}",
                    name.escape_debug(),
                    self.filesize
                ),
            });
        }
        self.entries += 1;
        self.current = name;
        self.state = if self.filesize == 0 {
            State::Header
        } else {
            State::Data {
                left: self.filesize,
                pad: pad4(self.filesize),
            }
        };
        Ok(())
    }

    /// The stream ended: fine only after the trailer.
    pub fn finish(&self) -> Result<(), SwuError> {
        let truncated = |missing: u64, place| {
            Err(SwuError::Truncated {
                offset: self.offset,
                missing,
                place,
            })
        };
        match &self.state {
            State::Done => Ok(()),
            State::Header if self.buf.is_empty() => {
                if self.offset == 0 {
                    Err(SwuError::NotCpio {
                        offset: 0,
                        what: "an empty file".into(),
                    })
                } else {
                    truncated(0, Place::NoTrailer)
                }
            }
            State::Header => truncated((HEADER - self.buf.len()) as u64, Place::Header),
            State::Name { len, pad } => truncated((len + pad - self.buf.len()) as u64, Place::Name),
            State::Data { left, .. } if *left == 0 => truncated(0, Place::NoTrailer),
            State::Data { left, .. } => truncated(*left, Place::Data(self.current.clone())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, data: &[u8]) -> Vec<u8> {
        let mut v = format!(
            "070702{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}",
            1,
            0o100644,
            0,
            0,
            1,
            0,
            data.len(),
            0,
            0,
            0,
            0,
            name.len() + 1,
            0
        )
        .into_bytes();
        v.extend_from_slice(name.as_bytes());
        v.push(0);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v.extend_from_slice(data);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }

    fn archive() -> Vec<u8> {
        let mut a = entry("sw-description", b"software = {};\n");
        a.extend(entry("sw-description.sig", &[7; 33]));
        a.extend(entry("rootfs.img", &[1; 1000]));
        a.extend(entry("TRAILER!!!", b""));
        a.resize(a.len().div_ceil(512) * 512, 0);
        a
    }

    /// The end of the trailer entry (its name and padding; it has no data).
    fn trailer_end(a: &[u8]) -> u64 {
        (a.windows(10).position(|w| w == b"TRAILER!!!").unwrap() + 11 + 3) as u64
    }

    #[test]
    fn a_whole_archive_in_any_split() {
        let a = archive();
        for split in [1, 3, 110, 111, 512, a.len()] {
            let mut t = SwuTracker::new();
            for c in a.chunks(split) {
                t.feed(c).unwrap();
            }
            assert!(t.complete(), "split {split}");
            assert_eq!(t.entries(), 3);
            t.finish().unwrap();
        }
    }

    #[test]
    fn truncation_names_the_entry() {
        let a = archive();
        let img_start = a.windows(10).position(|w| w == b"rootfs.img").unwrap();
        let mut t = SwuTracker::new();
        // Header (110) + name "rootfs.img\0" (11) padded to 124: data starts 14 bytes after the name.
        t.feed(&a[..img_start + 14 + 100]).unwrap();
        match t.finish().unwrap_err() {
            SwuError::Truncated { place, missing, .. } => {
                assert_eq!(place, Place::Data("rootfs.img".into()));
                assert_eq!(missing, 900);
            }
            e => panic!("{e}"),
        }
    }

    #[test]
    fn every_cut_before_the_trailer_is_an_error() {
        let a = archive();
        // The trailer's name (11 bytes with its NUL) and the padding of header + name to 4.
        let trailer = a.windows(10).position(|w| w == b"TRAILER!!!").unwrap() + 11 + 3;
        for cut in 0..trailer {
            let mut t = SwuTracker::new();
            t.feed(&a[..cut]).unwrap();
            assert!(t.finish().is_err(), "cut at {cut}");
        }
        let mut t = SwuTracker::new();
        t.feed(&a[..trailer]).unwrap();
        t.finish().unwrap();
    }

    #[test]
    fn missing_trailer() {
        let mut a = entry("sw-description", b"x");
        a.extend(entry("img", b"abcd"));
        let mut t = SwuTracker::new();
        t.feed(&a).unwrap();
        let e = t.finish().unwrap_err();
        assert!(e.to_string().contains("trailer is missing"), "{e}");
    }

    #[test]
    fn not_an_archive() {
        let mut t = SwuTracker::new();
        let e = t.feed(&[b'<'; 200]).unwrap_err();
        assert!(matches!(e, SwuError::NotCpio { offset: 0, .. }), "{e}");
        let e = SwuTracker::new().finish().unwrap_err();
        assert!(e.to_string().contains("empty"), "{e}");
        let mut bad = entry("sw-description", b"x");
        bad[6 + 6 * 8] = b'Z';
        assert!(SwuTracker::new().feed(&bad).is_err());
        let e = SwuTracker::new()
            .feed(&entry("rootfs.img", b"x"))
            .unwrap_err();
        assert_eq!(e, SwuError::FirstEntry("rootfs.img".into()));
    }

    /// Whatever follows the trailer and its padding is not taken; the archive then has ended.
    #[test]
    fn the_archive_ends_at_its_trailer() {
        let a = archive();
        let mut endless = a.clone();
        endless.extend(vec![0xAB; 200_000]);
        for split in [1000, 4096, 128 * 1024, endless.len()] {
            let mut t = SwuTracker::new();
            let mut taken = 0;
            for c in endless.chunks(split) {
                let n = t.feed(c).unwrap();
                taken += n;
                if n < c.len() {
                    break;
                }
            }
            assert!(t.complete() && t.ended(), "split {split}");
            // The archive (trailer and padding to 512) and AFTER_TRAILER bytes beyond the trailer.
            assert_eq!(taken as u64, trailer_end(&a) + AFTER_TRAILER);
            t.finish().unwrap();
        }
        // A whole archive and its padding, nothing after: taken whole, not yet ended.
        let mut t = SwuTracker::new();
        assert_eq!(t.feed(&a).unwrap(), a.len());
        assert!(t.complete() && !t.ended());
    }

    /// An entry that claims more than the limit is refused when its name is read, before its
    /// data; an archive that goes on past the limit, when it does.
    #[test]
    fn the_size_limit() {
        let mut h = entry("sw-description", b"x");
        let mut big = entry("rootfs.img", b"");
        big[6 + 6 * 8..6 + 7 * 8].copy_from_slice(b"FFFFFFFF");
        h.extend_from_slice(&big);
        let mut t = SwuTracker::with_max(1 << 20);
        let e = t.feed(&h).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "the .swu is larger than the 1048576-byte limit (download.max_image_size): its entry `rootfs.img` claims 4294967295 bytes, ending at byte {}",
                h.len() as u64 + 0xFFFF_FFFF
            )
        );
        // Under the limit: the claim passes.
        assert!(SwuTracker::with_max(8 << 30).feed(&h).is_ok());
        let a = archive();
        let mut t = SwuTracker::with_max(a.len() as u64 - 1);
        let e = t.feed(&a).unwrap_err();
        assert!(matches!(e, SwuError::TooLarge { .. }), "{e}");
        SwuTracker::with_max(a.len() as u64).feed(&a).unwrap();
    }

    #[test]
    fn huge_name_size_is_refused() {
        let mut h = entry("sw-description", b"");
        h[6 + 11 * 8..6 + 12 * 8].copy_from_slice(b"FFFFFFFF");
        assert!(SwuTracker::new().feed(&h).is_err());
    }
}
