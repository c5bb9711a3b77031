//! The event stream parser on arbitrary bytes, fed in pieces of 1 to 64 bytes (size from the
//! first byte) and whole: both must give the same events (or both the same refusal), no event may
//! exceed the bound, and every event's data goes through the job-event parser. Errors are fine;
//! panics, hangs and huge allocations are not.
#![no_main]

use cip_update_agent::wfx::client::parse_event;
use cip_update_agent::wfx::sse::{MAX_EVENT, Parser};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let piece = usize::from(first % 64) + 1;
    let mut split = Parser::new();
    let mut split_events = Vec::new();
    let mut split_err = None;
    for c in rest.chunks(piece) {
        match split.push(c) {
            Ok(evs) => split_events.extend(evs),
            Err(e) => {
                split_err = Some(e);
                break;
            }
        }
    }
    let mut whole = Parser::new();
    match whole.push(rest) {
        Ok(evs) => {
            assert!(split_err.is_none());
            assert_eq!(evs, split_events);
            assert_eq!(whole.comments, split.comments);
            assert_eq!(whole.lines, split.lines);
        }
        Err(e) => assert_eq!(Some(e), split_err),
    }
    for e in &split_events {
        assert!(e.data.len() <= MAX_EVENT);
        let _ = parse_event(&e.data);
    }
});
