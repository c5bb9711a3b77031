//! The multipart/byteranges parser on arbitrary answers, fed in pieces of a
//! size chosen by the input, with the Content-Type and Content-Range parsers
//! and the chunk collector behind it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zchunk::{Collector, Event, Multipart, Want};

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let piece = usize::from(first % 64) + 1;
    if let Ok(text) = std::str::from_utf8(rest) {
        let _ = zchunk::multipart::boundary(text);
        let _ = zchunk::multipart::parse_content_range(text);
    }
    let wants = [
        Want {
            id: 0,
            offset: 0,
            len: 10,
        },
        Want {
            id: 1,
            offset: 10,
            len: 5,
        },
        Want {
            id: 2,
            offset: 1000,
            len: 100,
        },
        Want {
            id: 3,
            offset: u64::MAX - 10,
            len: 20,
        },
    ];
    let mut collector = Collector::new(&wants);
    let mut p = Multipart::new("B0");
    for chunk in rest.chunks(piece) {
        match p.push(chunk) {
            Ok(events) => {
                for ev in events {
                    if let Event::Data { offset, data } = ev {
                        for (w, bytes) in collector.push(offset, &data) {
                            assert_eq!(bytes.len() as u64, w.len);
                        }
                    }
                }
            }
            Err(_) => return,
        }
    }
    let _ = p.finish();
    let _ = collector.missing();
});
