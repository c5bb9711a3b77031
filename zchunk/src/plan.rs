//! Planning HTTP range requests for the chunks a delta needs, and mapping the
//! answer's bytes back to chunks.
//!
//! Neighbouring chunks become one range; gaps up to `max_gap` bytes are
//! fetched too when that saves a range (each part of a multi-range answer
//! costs about 100 bytes of part headers, and each range about 20 bytes of
//! request header); ranges are grouped into requests of at most
//! `max_ranges_per_request`, so `n` ranges take `ceil(n / cap)` requests.

use std::collections::HashMap;

/// A byte range the caller needs, with its own key (e.g. the chunk index).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Want {
    /// The caller's key.
    pub id: usize,
    /// Where the range starts in the file.
    pub offset: u64,
    /// Its length.
    pub len: u64,
}

impl Want {
    /// The first byte after it.
    pub fn end(&self) -> u64 {
        self.offset.saturating_add(self.len)
    }
}

/// Tuning of [`plan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanOptions {
    /// Largest gap between two wanted ranges that is fetched to join them.
    pub max_gap: u64,
    /// Most ranges in one request (0 counts as 1). Servers limit the Range
    /// header's length (nginx: 8 KiB by default) and some the range count.
    pub max_ranges_per_request: usize,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            max_gap: 128,
            max_ranges_per_request: 128,
        }
    }
}

/// One range of a request and the wants it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ByteRange {
    /// First byte.
    pub start: u64,
    /// Exclusive.
    pub end: u64,
    /// The wants it carries (wholly or in part).
    pub wants: Vec<Want>,
}

impl ByteRange {
    /// Bytes in the range.
    pub fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }
    /// A range of no byte.
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
    /// `first-last` as in a Range header (inclusive).
    pub fn spec(&self) -> String {
        format!("{}-{}", self.start, self.end.saturating_sub(1))
    }
}

/// One HTTP request: its ranges in ascending order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The ranges of the request, ascending.
    pub ranges: Vec<ByteRange>,
}

impl Request {
    /// The value of the `Range` header.
    pub fn range_header(&self) -> String {
        let specs: Vec<String> = self.ranges.iter().map(ByteRange::spec).collect();
        format!("bytes={}", specs.join(","))
    }
    /// Bytes asked for (answer bodies add part headers).
    pub fn len(&self) -> u64 {
        self.ranges.iter().map(ByteRange::len).sum()
    }
    /// No range asked for.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
    /// Every want of the request.
    pub fn wants(&self) -> impl Iterator<Item = &Want> {
        self.ranges.iter().flat_map(|r| r.wants.iter())
    }
}

/// Plans the requests that fetch `wants` (in any order; empty ones are
/// skipped, overlapping ones share their range).
pub fn plan(wants: &[Want], opts: &PlanOptions) -> Vec<Request> {
    let mut sorted: Vec<Want> = wants.iter().copied().filter(|w| w.len > 0).collect();
    sorted.sort_by_key(|w| (w.offset, w.len, w.id));
    let mut ranges: Vec<ByteRange> = Vec::new();
    for w in sorted {
        match ranges.last_mut() {
            Some(r) if w.offset <= r.end.saturating_add(opts.max_gap) => {
                r.end = r.end.max(w.end());
                r.wants.push(w);
            }
            _ => ranges.push(ByteRange {
                start: w.offset,
                end: w.end(),
                wants: vec![w],
            }),
        }
    }
    let cap = opts.max_ranges_per_request.max(1);
    let mut requests = Vec::with_capacity(ranges.len().div_ceil(cap));
    let mut it = ranges.into_iter().peekable();
    while it.peek().is_some() {
        requests.push(Request {
            ranges: it.by_ref().take(cap).collect(),
        });
    }
    requests
}

/// Collects the bytes of an answer (pieces at absolute offsets, in any
/// segmentation: parts may be merged or split by the server) into whole wants.
/// Holds only the wants that are partly received.
pub struct Collector {
    wants: Vec<Want>,
    partial: HashMap<usize, Vec<u8>>,
    done: Vec<bool>,
}

impl Collector {
    /// A collector of `wants` (empty ones are complete already).
    pub fn new<'a>(wants: impl IntoIterator<Item = &'a Want>) -> Collector {
        let mut wants: Vec<Want> = wants.into_iter().copied().filter(|w| w.len > 0).collect();
        wants.sort_by_key(|w| (w.offset, w.len, w.id));
        let done = vec![false; wants.len()];
        Collector {
            wants,
            partial: HashMap::new(),
            done,
        }
    }

    /// Takes `data` found at `offset` in the file; returns the wants it
    /// completed with their bytes. Bytes of no want are ignored; bytes that
    /// would leave a hole in a want are dropped (the want stays missing).
    pub fn push(&mut self, offset: u64, data: &[u8]) -> Vec<(Want, Vec<u8>)> {
        let end = offset.saturating_add(data.len() as u64);
        let mut complete = Vec::new();
        // Wants are sorted by offset; those ending after `offset` may overlap.
        let first = self.wants.partition_point(|w| w.end() <= offset);
        for i in first..self.wants.len() {
            let w = self.wants[i];
            if w.offset >= end {
                break;
            }
            if self.done[i] || w.end() <= offset {
                continue;
            }
            let buf = self.partial.entry(i).or_default();
            let have = w.offset + buf.len() as u64;
            if offset > have {
                continue;
            }
            let from = have.max(offset);
            let to = end.min(w.end());
            if to <= from {
                continue;
            }
            // from >= offset and to <= end: the slice lies inside `data`.
            buf.extend_from_slice(&data[(from - offset) as usize..(to - offset) as usize]);
            if buf.len() as u64 == w.len {
                self.done[i] = true;
                if let Some(bytes) = self.partial.remove(&i) {
                    complete.push((w, bytes));
                }
            }
        }
        complete
    }

    /// The wants not complete yet.
    pub fn missing(&self) -> Vec<Want> {
        self.wants
            .iter()
            .zip(&self.done)
            .filter(|(_, d)| !**d)
            .map(|(w, _)| *w)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(id: usize, offset: u64, len: u64) -> Want {
        Want { id, offset, len }
    }

    fn opts(max_gap: u64, cap: usize) -> PlanOptions {
        PlanOptions {
            max_gap,
            max_ranges_per_request: cap,
        }
    }

    #[test]
    fn neighbours_merge_into_one_range() {
        let reqs = plan(&[w(2, 100, 50), w(1, 0, 100), w(3, 150, 10)], &opts(0, 10));
        assert_eq!(reqs.len(), 1);
        assert_eq!(reqs[0].ranges.len(), 1);
        assert_eq!(reqs[0].range_header(), "bytes=0-159");
        let ids: Vec<usize> = reqs[0].wants().map(|w| w.id).collect();
        assert_eq!(ids, [1, 2, 3]);
    }

    #[test]
    fn small_gaps_are_filled_and_large_ones_are_not() {
        let wants = [w(1, 0, 100), w(2, 110, 10), w(3, 1000, 10)];
        let reqs = plan(&wants, &opts(10, 10));
        assert_eq!(reqs[0].range_header(), "bytes=0-119,1000-1009");
        // A gap one byte over the limit is not filled.
        let reqs = plan(&wants, &opts(9, 10));
        assert_eq!(reqs[0].range_header(), "bytes=0-99,110-119,1000-1009");
        assert_eq!(reqs[0].len(), 120);
    }

    #[test]
    fn cap_per_request_gives_ceil_of_ranges_over_cap() {
        // 10 separate ranges.
        let wants: Vec<Want> = (0..10).map(|i| w(i, i as u64 * 1000, 100)).collect();
        for cap in 1..=12 {
            let reqs = plan(&wants, &opts(0, cap));
            assert_eq!(reqs.len(), 10usize.div_ceil(cap), "cap {cap}");
            assert!(reqs.iter().all(|r| r.ranges.len() <= cap));
            let total: usize = reqs.iter().map(|r| r.ranges.len()).sum();
            assert_eq!(total, 10);
        }
        // A cap of 0 means one range per request, not a panic or a loop.
        assert_eq!(plan(&wants, &opts(0, 0)).len(), 10);
    }

    #[test]
    fn empty_and_duplicate_wants() {
        assert!(plan(&[], &PlanOptions::default()).is_empty());
        assert!(plan(&[w(1, 5, 0)], &PlanOptions::default()).is_empty());
        let reqs = plan(&[w(1, 0, 10), w(2, 0, 10)], &opts(0, 1));
        assert_eq!(reqs.len(), 1);
        assert_eq!(reqs[0].range_header(), "bytes=0-9");
    }

    #[test]
    fn collector_maps_parts_back_to_wants() {
        let wants = [w(7, 10, 5), w(8, 15, 5), w(9, 40, 3)];
        let reqs = plan(&wants, &opts(0, 10));
        let mut c = Collector::new(reqs[0].wants());
        let file: Vec<u8> = (0..50u8).collect();
        // First part split in two pieces across a want.
        let got = c.push(10, &file[10..17]);
        assert_eq!(got, vec![(wants[0], file[10..15].to_vec())]);
        let got = c.push(17, &file[17..20]);
        assert_eq!(got, vec![(wants[1], file[15..20].to_vec())]);
        assert_eq!(c.missing(), vec![wants[2]]);
        // A server that sends more than asked: extra bytes are ignored.
        let got = c.push(30, &file[30..50]);
        assert_eq!(got, vec![(wants[2], file[40..43].to_vec())]);
        assert!(c.missing().is_empty());
        // A repeated piece completes nothing twice.
        assert!(c.push(10, &file[10..20]).is_empty());
    }

    #[test]
    fn collector_drops_pieces_that_leave_a_hole() {
        let mut c = Collector::new(&[w(1, 0, 10)]);
        assert!(c.push(5, &[0; 5]).is_empty());
        assert_eq!(c.missing().len(), 1);
        assert_eq!(c.push(0, &[1; 10]).len(), 1);
    }
}
