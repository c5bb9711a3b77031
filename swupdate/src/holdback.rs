//! Keeps the last bytes of a stream back until the sender commits it.
//!
//! A `.swu` ends with the cpio trailer after the last image; SWUpdate cannot complete an install
//! without them. Whoever holds them back can still make the install fail after every other byte
//! went through, which is how a hash mismatch seen only at the end stops an install.

/// The held-back tail of a stream.
#[derive(Debug)]
pub struct Holdback {
    keep: usize,
    tail: Vec<u8>,
}

/// What may go out after a [`Holdback::push`]: the released part of the old tail, then a prefix of
/// the pushed data.
#[derive(Debug, PartialEq, Eq)]
pub struct Release<'a> {
    /// Released from the bytes held back before.
    pub from_tail: Vec<u8>,
    /// Released from the bytes just pushed.
    pub from_data: &'a [u8],
}

impl Holdback {
    /// Holds back the last `keep` bytes.
    pub fn new(keep: usize) -> Self {
        Holdback {
            keep,
            tail: Vec::with_capacity(keep),
        }
    }

    /// Bytes held back now.
    pub fn len(&self) -> usize {
        self.tail.len()
    }

    /// Nothing held back.
    pub fn is_empty(&self) -> bool {
        self.tail.is_empty()
    }

    /// Takes the next bytes; releases whatever is no longer among the last `keep`.
    pub fn push<'a>(&mut self, data: &'a [u8]) -> Release<'a> {
        let total = self.tail.len() + data.len();
        if total <= self.keep {
            self.tail.extend_from_slice(data);
            return Release {
                from_tail: Vec::new(),
                from_data: &[],
            };
        }
        let excess = total - self.keep;
        if excess >= self.tail.len() {
            let from_tail = std::mem::replace(&mut self.tail, Vec::with_capacity(self.keep));
            let split = excess - from_tail.len();
            self.tail.extend_from_slice(&data[split..]);
            Release {
                from_tail,
                from_data: &data[..split],
            }
        } else {
            let from_tail = self.tail.drain(..excess).collect();
            self.tail.extend_from_slice(data);
            Release {
                from_tail,
                from_data: &[],
            }
        }
    }

    /// The whole tail, for the commit.
    pub fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.tail)
    }

    /// Forgets the tail: the stream will never be complete.
    pub fn discard(&mut self) {
        self.tail.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Any split of any stream: what is released, in order, then the tail, is the stream; the
    /// tail is always its last `keep` bytes.
    #[test]
    fn releases_everything_but_the_last_bytes_in_order() {
        let stream: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
        for keep in [1, 10, 64, 1000, 6000] {
            for chunk in [1, 3, 63, 64, 65, 999, 4096] {
                let mut h = Holdback::new(keep);
                let mut out = Vec::new();
                for c in stream.chunks(chunk) {
                    let r = h.push(c);
                    out.extend_from_slice(&r.from_tail);
                    out.extend_from_slice(r.from_data);
                    let held = keep.min(out.len() + h.len());
                    assert_eq!(h.len(), held, "keep {keep} chunk {chunk}");
                    assert_eq!(&stream[..out.len()], &out[..], "keep {keep} chunk {chunk}");
                }
                assert_eq!(h.len(), keep.min(stream.len()));
                out.extend(h.take());
                assert_eq!(out, stream, "keep {keep} chunk {chunk}");
            }
        }
    }

    #[test]
    fn discard_loses_the_tail() {
        let mut h = Holdback::new(4);
        assert_eq!(h.push(b"abcdef").from_data, b"ab");
        h.discard();
        assert!(h.is_empty());
        assert!(h.take().is_empty());
    }
}
