//! Range requests planned here, answered by a real nginx, parsed here: the
//! multi-range answers map back to the chunks asked for, byte for byte, and
//! the number of requests is ceil(ranges / cap).

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};

use cip_test_support::nginx::Nginx;
use common::{image, zck};
use zchunk::{ChunkDecoder, Collector, Event, Header, Multipart, PlanOptions, Want, plan};

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A plain HTTP/1.1 GET with `Connection: close` (nginx then sends a
/// Content-Length body, no chunked encoding).
fn get(port: u16, path: &str, range: &str) -> Answer {
    let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
    write!(
        s,
        "GET /{path} HTTP/1.1\r\nHost: 127.0.0.1\r\nRange: {range}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_string(), v.trim().to_string())
        })
        .collect();
    Answer {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

#[test]
fn planned_ranges_fetched_from_nginx_map_back_to_chunks() {
    let docroot = tempfile::tempdir().unwrap();
    let input = image(2_000_000, 31);
    let path = zck(docroot.path(), "image", &input, &["-u"]);
    let file = std::fs::read(&path).unwrap();
    let header = Header::parse(&file).unwrap();
    let nginx = Nginx::start(docroot.path()).unwrap();

    // Every third chunk, plus a run of neighbours that merge into one range.
    let chunks = header.data_chunks();
    let mut wants: Vec<Want> = chunks
        .iter()
        .filter(|c| c.index % 3 == 0 || (10..14).contains(&c.index))
        .map(|c| Want {
            id: c.index,
            offset: c.offset,
            len: c.comp_len,
        })
        .collect();
    wants.reverse(); // the planner sorts
    let opts = PlanOptions {
        max_gap: 0,
        max_ranges_per_request: 4,
    };
    let requests = plan(&wants, &opts);
    let ranges: usize = requests.iter().map(|r| r.ranges.len()).sum();
    assert!(ranges < wants.len(), "neighbours merged");
    assert_eq!(requests.len(), ranges.div_ceil(4));

    let mut decoder = ChunkDecoder::new(&header, None).unwrap();
    let mut got = 0;
    for req in &requests {
        let answer = get(nginx.port(), "image.zck", &req.range_header());
        assert_eq!(answer.status, 206);
        let mut collector = Collector::new(req.wants());
        let mut complete = Vec::new();
        if req.ranges.len() > 1 {
            let ct = answer.header("Content-Type").unwrap();
            let boundary = zchunk::multipart::boundary(ct).unwrap();
            let mut parser = Multipart::new(&boundary);
            // Streamed in pieces, as from a socket.
            for piece in answer.body.chunks(1500) {
                for ev in parser.push(piece).unwrap() {
                    if let Event::Data { offset, data } = ev {
                        complete.extend(collector.push(offset, &data));
                    }
                }
            }
            parser.finish().unwrap();
            assert_eq!(parser.parts(), req.ranges.len() as u64);
        } else {
            let cr =
                zchunk::multipart::parse_content_range(answer.header("Content-Range").unwrap())
                    .unwrap();
            assert_eq!(cr.total, Some(file.len() as u64));
            complete.extend(collector.push(cr.start, &answer.body));
        }
        assert!(
            collector.missing().is_empty(),
            "missing {:?}",
            collector.missing()
        );
        for (want, bytes) in complete {
            assert_eq!(bytes, &file[want.offset as usize..want.end() as usize]);
            let chunk = &header.chunks()[want.id];
            let data = decoder.expand(chunk, &bytes).unwrap();
            let at = chunk.uncomp_offset as usize;
            assert!(data == input[at..at + data.len()], "chunk {}", want.id);
            got += 1;
        }
    }
    assert_eq!(got, wants.len());
    // nginx saw exactly the planned requests.
    assert_eq!(nginx.access_log().lines().count(), requests.len());
}

#[test]
fn nginx_multipart_answer_is_parsed_and_damage_is_rejected() {
    let docroot = tempfile::tempdir().unwrap();
    let file = common::random(100_000, 3);
    std::fs::write(docroot.path().join("f"), &file).unwrap();
    let nginx = Nginx::start(docroot.path()).unwrap();
    let answer = get(nginx.port(), "f", "bytes=0-9,100-199,99990-99999");
    assert_eq!(answer.status, 206);
    let boundary = zchunk::multipart::boundary(answer.header("Content-Type").unwrap()).unwrap();
    let parse = |body: &[u8]| -> Result<Vec<(u64, Vec<u8>)>, zchunk::MultipartError> {
        let mut p = Multipart::new(&boundary);
        let mut out: Vec<(u64, Vec<u8>)> = Vec::new();
        for piece in body.chunks(7) {
            for ev in p.push(piece)? {
                match ev {
                    Event::Part(r) => out.push((r.start, Vec::new())),
                    Event::Data { data, .. } => out.last_mut().unwrap().1.extend(data),
                    Event::End => {}
                }
            }
        }
        p.finish()?;
        Ok(out)
    };
    let parts = parse(&answer.body).unwrap();
    assert_eq!(
        parts,
        vec![
            (0, file[0..10].to_vec()),
            (100, file[100..200].to_vec()),
            (99990, file[99990..].to_vec()),
        ]
    );
    // The same answer damaged: cut anywhere, a byte dropped from a body,
    // a Content-Range altered, the boundary changed.
    let body = &answer.body;
    for cut in [1, body.len() / 3, body.len() / 2, body.len() - 3] {
        assert!(parse(&body[..cut]).is_err(), "cut at {cut}");
    }
    let first_data = body.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let mut dropped = body.clone();
    dropped.remove(first_data + 2);
    assert!(parse(&dropped).is_err());
    let shorter = replace(body, b"bytes 0-9/", b"bytes 0-8/");
    assert_ne!(&shorter, body);
    assert!(parse(&shorter).is_err());
    let other = replace(body, boundary.as_bytes(), &vec![b'z'; boundary.len()]);
    assert_ne!(&other, body);
    assert!(parse(&other).is_err());
}

/// `hay` with every `from` replaced by `to` (same length).
fn replace(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = hay.to_vec();
    let mut i = 0;
    while i + from.len() <= out.len() {
        if &out[i..i + from.len()] == from {
            out[i..i + from.len()].copy_from_slice(to);
            i += from.len();
        } else {
            i += 1;
        }
    }
    out
}
