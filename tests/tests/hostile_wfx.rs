//! A hostile wfx: a scripted server on loopback that answers the real agent (`run`) with huge,
//! endless, silent or dribbling answers and event streams. Each test asserts what a device owner
//! would check: the agent's memory stays bounded (peak RSS, `VmHWM`, under [`RSS_BOUND`]), it
//! does not hammer the server (requests counted), it gives up on silent or dribbling answers and
//! tries again, a legitimate job is still handled afterwards, and SIGTERM ends it promptly.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use cip_update_agent_tests::scenarios::fleet::{DIRECT, Fleet};
use cip_update_agent_tests::servers::raw_http::{RawServer, read_head};
use nix::sys::signal::Signal;

/// Peak resident memory the agent may reach under any of these attacks. The debug build peaks at
/// 19-21 MiB under them, 37-40 MiB for pages of tiny values (bounds: 1 MiB of job list per
/// listing, 256 KiB per event, 256 KiB of deleted ids); without the bounds it went past 400 MiB.
const RSS_BOUND_KIB: u64 = 48 * 1024;
/// How long a hostile phase lasts before the checks.
const PHASE: Duration = Duration::from_secs(10);
/// How long the agent may take to handle the legitimate job once the server turns honest.
const LEGIT_WITHIN: Duration = Duration::from_secs(30);
/// How long the agent may take to exit after SIGTERM.
const EXIT_WITHIN: Duration = Duration::from_secs(5);
/// The legitimate job: a direct job in INSTALL with a definition the agent refuses at once
/// (TERMINATED, "malformed job definition"): handling it needs no SWUpdate.
const LEGIT_ID: &str = "legit-1";

/// The path of the API on the server.
const BASE: &str = "/api/wfx/v1";

/// A request's first line, split.
struct Req {
    method: String,
    /// Path and query.
    target: String,
    body: Vec<u8>,
}

impl Req {
    fn is_list(&self) -> bool {
        self.method == "GET" && self.target.starts_with("/jobs?")
    }
    fn is_events(&self) -> bool {
        self.target.starts_with("/jobs/events")
    }
    /// The `offset` query value of a listing.
    fn offset(&self) -> usize {
        self.target
            .split(['?', '&'])
            .find_map(|kv| kv.strip_prefix("offset="))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

fn read_req(s: &mut TcpStream) -> io::Result<Option<Req>> {
    let Some(head) = read_head(s)? else {
        return Ok(None);
    };
    let end = head.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0) + 4;
    let text = String::from_utf8_lossy(&head[..end]).into_owned();
    let mut first = text.lines().next().unwrap_or("").split(' ');
    let method = first.next().unwrap_or("").to_owned();
    let target = first.next().unwrap_or("");
    let target = target.strip_prefix(BASE).unwrap_or(target).to_owned();
    let len = text
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = head[end..].to_vec();
    while body.len() < len {
        let mut b = [0u8; 4096];
        let n = s.read(&mut b)?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&b[..n]);
    }
    Ok(Some(Req {
        method,
        target,
        body,
    }))
}

fn respond(s: &mut TcpStream, status: &str, body: &str) -> io::Result<()> {
    write!(
        s,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Keeps the connection open, sending nothing, until the test ends (2 minutes at most).
fn hold(stop: &AtomicBool) -> io::Result<()> {
    let until = Instant::now() + Duration::from_secs(120);
    while !stop.load(Ordering::SeqCst) && Instant::now() < until {
        thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Writes `head`, then `piece` again and again until the client hangs up or the test ends.
fn head_then_endless(
    s: &mut TcpStream,
    stop: &AtomicBool,
    head: &[u8],
    piece: String,
) -> io::Result<()> {
    s.write_all(head)?;
    endless(s, stop, || piece.clone().into_bytes())
}

/// Writes `piece()` until the client hangs up or the test ends.
fn endless(
    s: &mut TcpStream,
    stop: &AtomicBool,
    mut piece: impl FnMut() -> Vec<u8>,
) -> io::Result<()> {
    while !stop.load(Ordering::SeqCst) {
        s.write_all(&piece())?;
    }
    Ok(())
}

/// Writes `head` at once, then `text` one byte every `pause`, then holds the connection.
fn dribble(
    s: &mut TcpStream,
    stop: &AtomicBool,
    head: &[u8],
    text: &[u8],
    pause: Duration,
) -> io::Result<()> {
    s.write_all(head)?;
    for b in text {
        if stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        s.write_all(&[*b])?;
        thread::sleep(pause);
    }
    hold(stop)
}

type Behaviour = dyn Fn(&mut TcpStream, &Req, &AtomicBool) -> io::Result<()> + Send + Sync;

/// What the hostile wfx saw.
#[derive(Default)]
struct Seen {
    lists: AtomicUsize,
    events: AtomicUsize,
    /// Bodies of the status updates of the legitimate job.
    puts: Mutex<Vec<String>>,
}

/// The scripted wfx: `list` answers job listings and `events` the event stream while the server
/// is hostile; once [`HostileWfx::turn_honest`] is called, listings hold the legitimate job and
/// the job's own requests are answered as wfx would (the event stream stays as scripted).
struct HostileWfx {
    server: RawServer,
    seen: Arc<Seen>,
    honest: Arc<AtomicBool>,
}

impl HostileWfx {
    fn start(
        list: impl Fn(&mut TcpStream, &Req, &AtomicBool) -> io::Result<()> + Send + Sync + 'static,
        events: impl Fn(&mut TcpStream, &Req, &AtomicBool) -> io::Result<()> + Send + Sync + 'static,
    ) -> HostileWfx {
        let seen = Arc::new(Seen::default());
        let honest = Arc::new(AtomicBool::new(false));
        let (list, events): (Box<Behaviour>, Box<Behaviour>) = (Box::new(list), Box::new(events));
        let (seen2, honest2) = (seen.clone(), honest.clone());
        let state = Arc::new(Mutex::new("INSTALL".to_owned()));
        let server = RawServer::start(move |mut s, stop| {
            let _ = (|| -> io::Result<()> {
                let Some(req) = read_req(&mut s)? else {
                    return Ok(());
                };
                if req.is_events() {
                    seen2.events.fetch_add(1, Ordering::SeqCst);
                    return events(&mut s, &req, stop);
                }
                if req.is_list() {
                    seen2.lists.fetch_add(1, Ordering::SeqCst);
                    if !honest2.load(Ordering::SeqCst) {
                        return list(&mut s, &req, stop);
                    }
                    let st = state.lock().unwrap().clone();
                    let content = if st == "TERMINATED" {
                        String::new()
                    } else {
                        legit_job(&st)
                    };
                    return respond(&mut s, "200 OK", &format!("{{\"content\":[{content}]}}"));
                }
                let job = format!("/jobs/{LEGIT_ID}");
                if req.method == "PUT" && req.target == format!("{job}/status") {
                    let body = String::from_utf8_lossy(&req.body).into_owned();
                    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                    if let Some(st) = v["state"].as_str() {
                        *state.lock().unwrap() = st.to_owned();
                    }
                    seen2.puts.lock().unwrap().push(body.clone());
                    return respond(&mut s, "200 OK", &body);
                }
                if req.method == "GET" && req.target == job {
                    let st = state.lock().unwrap().clone();
                    return respond(&mut s, "200 OK", &legit_job(&st));
                }
                respond(
                    &mut s,
                    "404 Not Found",
                    r#"{"errors":[{"code":"wfx.jobNotFound"}]}"#,
                )
            })();
        })
        .expect("hostile wfx");
        HostileWfx {
            server,
            seen,
            honest,
        }
    }

    fn url(&self) -> String {
        self.server.url(&BASE[1..])
    }

    fn turn_honest(&self) {
        self.honest.store(true, Ordering::SeqCst);
    }

    fn lists(&self) -> usize {
        self.seen.lists.load(Ordering::SeqCst)
    }

    fn events(&self) -> usize {
        self.seen.events.load(Ordering::SeqCst)
    }

    fn terminated(&self) -> Option<String> {
        self.seen
            .puts
            .lock()
            .unwrap()
            .iter()
            .find(|b| b.contains("\"TERMINATED\""))
            .cloned()
    }
}

fn legit_job(state: &str) -> String {
    serde_json::json!({
        "id": LEGIT_ID,
        "clientId": "dev-0042",
        "workflow": {"name": DIRECT},
        "definition": {"nonsense": true},
        "status": {"state": state, "definitionHash": "ab"},
        "stime": "2026-12-03T10:00:00Z",
    })
    .to_string()
}

/// The event stream is not there (the agent retries it with backoff).
fn no_events(s: &mut TcpStream, _: &Req, _: &AtomicBool) -> io::Result<()> {
    respond(
        s,
        "404 Not Found",
        r#"{"errors":[{"code":"wfx.notFound"}]}"#,
    )
}

/// A page of the job list holding `jobs`.
fn page(s: &mut TcpStream, jobs: &[String]) -> io::Result<()> {
    respond(
        s,
        "200 OK",
        &format!("{{\"content\":[{}]}}", jobs.join(",")),
    )
}

/// An empty job list.
fn no_jobs(s: &mut TcpStream, _: &Req, _: &AtomicBool) -> io::Result<()> {
    respond(s, "200 OK", r#"{"content":[]}"#)
}

fn sse_head(s: &mut TcpStream) -> io::Result<()> {
    s.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n",
    )
}

/// One wfx-like job of another workflow (the agent skips it), `pad` bytes of padding.
fn other_job(id: &str, pad: usize) -> String {
    format!(
        r#"{{"id":"{id}","clientId":"dev-0042","workflow":{{"name":"other.workflow"}},"definition":{{"pad":"{}"}},"status":{{"state":"CREATED"}}}}"#,
        "p".repeat(pad)
    )
}

/// The agent under attack.
struct Run {
    f: Fleet,
    wfx: HostileWfx,
    started: Instant,
}

impl Run {
    /// Starts the agent against `wfx` with `[wfx]` keys `extra` (besides url and poll_interval).
    fn start(wfx: HostileWfx, poll: &str, extra: &str) -> Run {
        let mut f = Fleet::builder().without_swupdate().without_nginx().start();
        f.config.wfx_url = Some(wfx.url());
        f.config.poll_interval = poll.to_owned();
        f.config.progress_interval = None;
        // Without SWUpdate, `[wfx]` is the last section before `extra`: the keys land in it.
        assert!(f.config.sockets.is_none());
        f.config.extra = extra.to_owned();
        f.start_agent();
        let started = Instant::now();
        Run { f, wfx, started }
    }

    fn pid(&self) -> u32 {
        self.f.agent.as_ref().unwrap().pid()
    }

    /// Peak resident memory so far (KiB), while the agent runs.
    fn peak_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .unwrap_or_else(|e| panic!("the agent exited: {e}\n{}", self.f.agent_log()));
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM")
    }

    /// Watches the agent for `d`, failing as soon as its peak memory passes the bound.
    fn watch(&self, d: Duration) -> u64 {
        let peak = self.watch_quietly(d);
        eprintln!("peak RSS {peak} KiB after {:?}", self.started.elapsed());
        peak
    }

    fn watch_quietly(&self, d: Duration) -> u64 {
        let until = Instant::now() + d;
        loop {
            let peak = self.peak_kib();
            assert!(
                peak < RSS_BOUND_KIB,
                "peak RSS {peak} KiB >= {RSS_BOUND_KIB} KiB after {:?}\nagent log:\n{}",
                self.started.elapsed(),
                tail(&self.f.agent_log())
            );
            if Instant::now() >= until {
                return peak;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// The server turns honest: the legitimate job must end TERMINATED (malformed definition)
    /// within [`LEGIT_WITHIN`], memory still bounded.
    fn legit_job_is_handled(&self) {
        self.wfx.turn_honest();
        let honest_at = Instant::now();
        let until = honest_at + LEGIT_WITHIN;
        while self.wfx.terminated().is_none() {
            assert!(
                Instant::now() < until,
                "the legitimate job was not handled within {LEGIT_WITHIN:?}\nagent log:\n{}",
                tail(&self.f.agent_log())
            );
            self.watch_quietly(Duration::from_millis(200));
        }
        eprintln!(
            "legitimate job handled {:?} after the server turned honest; peak RSS {} KiB",
            honest_at.elapsed(),
            self.peak_kib()
        );
        let body = self.wfx.terminated().unwrap();
        assert!(body.contains("malformed job definition"), "{body}");
    }

    /// SIGTERM: the agent exits, successfully, within [`EXIT_WITHIN`].
    fn stops_on_sigterm(mut self) {
        let mut agent = self.f.agent.take().unwrap();
        let asked = Instant::now();
        agent.signal_group(Signal::SIGTERM).unwrap();
        let status = agent.wait_timeout(EXIT_WITHIN).unwrap();
        assert!(
            status.is_some_and(|s| s.success()),
            "no clean exit within {EXIT_WITHIN:?} of SIGTERM: {status:?}\nagent log:\n{}",
            tail(&self.f.agent_log())
        );
        eprintln!("exited {:?} after SIGTERM", asked.elapsed());
    }

    fn log(&self) -> String {
        self.f.agent_log()
    }
}

/// The `[wfx]` timeouts of the tests of silent and dribbling servers: short, so that the agent
/// gives up within a [`PHASE`].
const TIMEOUTS: &str = "request_timeout = \"2s\"\nstream_timeout = \"3s\"\n";

/// The course every test but one follows: the agent runs against `wfx` for a [`PHASE`] (its
/// memory bounded throughout), `checks` look at what it did meanwhile, then the server turns
/// honest and the legitimate job must be handled, and SIGTERM must end the agent.
fn survives(wfx: HostileWfx, poll: &str, extra: &str, checks: impl FnOnce(&Run)) {
    let r = Run::start(wfx, poll, extra);
    r.watch(PHASE);
    checks(&r);
    r.legit_job_is_handled();
    r.stops_on_sigterm();
}

/// Asserts that the agent's log holds `what`, showing its end if not.
fn assert_logged(r: &Run, what: &str) {
    let log = r.log();
    assert!(log.contains(what), "{}", tail(&log));
}

/// The end of a log (the failure messages stay readable).
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

#[test]
fn a_200_mb_job_list_is_refused_without_reading_it() {
    let wfx = HostileWfx::start(
        |s, _, stop| {
            let total = 200_000_000usize;
            write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {total}\r\nConnection: close\r\n\r\n{{\"content\":["
            )?;
            let job = format!("{},", other_job("big", 1000));
            let mut sent = 12;
            while sent + job.len() < total && !stop.load(Ordering::SeqCst) {
                s.write_all(job.as_bytes())?;
                sent += job.len();
            }
            Ok(())
        },
        no_events,
    );
    survives(wfx, "2s", "", |r| {
        assert!(r.wfx.lists() >= 2, "listed again at the next poll");
        assert_logged(r, "larger than");
    });
}

#[test]
fn an_endless_job_list_is_cut_at_the_bound() {
    let wfx = HostileWfx::start(
        |s, _, stop| {
            head_then_endless(
                s,
                stop,
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{\"content\":[",
                format!("{},", other_job("endless", 4000)),
            )
        },
        no_events,
    );
    survives(wfx, "2s", "", |r| {
        assert!(r.wfx.lists() >= 2, "listed again at the next poll");
        assert_logged(r, "larger than");
    });
}

#[test]
fn an_endless_error_body_is_cut_at_the_bound() {
    let wfx = HostileWfx::start(
        |s, _, stop| {
            head_then_endless(
                s,
                stop,
                b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n",
                "the server is on fire ".repeat(200),
            )
        },
        no_events,
    );
    survives(wfx, "2s", "", |r| {
        // 500 is retried (with backoff) within a listing.
        assert!(r.wfx.lists() >= 2, "retried");
        assert_logged(r, "wfx: 500: the server is on fire");
    });
}

#[test]
fn full_pages_forever_stop_at_the_page_limit() {
    let wfx = HostileWfx::start(
        |s, req, _| {
            let base = req.offset();
            let jobs: Vec<String> = (0..50)
                .map(|i| other_job(&format!("page-{}", base + i), 10))
                .collect();
            page(s, &jobs)
        },
        no_events,
    );
    // A long poll: only the start's listing falls within the test.
    let r = Run::start(wfx, "60s", "");
    assert!(
        cip_update_agent_tests::wait_for(|| r.wfx.lists() >= 20, Duration::from_secs(30)),
        "the start's listing: {} pages\n{}",
        r.wfx.lists(),
        tail(&r.log())
    );
    let first = r.started.elapsed();
    r.watch(PHASE / 2);
    let n = r.wfx.lists();
    eprintln!(
        "20 pages read in {first:?}; {n} listing requests after {:?}",
        r.started.elapsed()
    );
    assert_eq!(n, 20, "one listing of 20 pages, then the poll interval");
    assert_logged(&r, "still more after 20 pages");
    r.stops_on_sigterm();
}

#[test]
fn an_event_of_endless_data_lines_is_refused() {
    let wfx = HostileWfx::start(no_jobs, |s, _, stop| {
        sse_head(s)?;
        let line = format!("data: {}\n", "x".repeat(1000));
        endless(s, stop, || line.clone().into_bytes())
    });
    survives(wfx, "2s", "", |r| {
        assert!(r.wfx.events() >= 2, "the stream is reconnected");
        assert_logged(r, "event larger than");
    });
}

#[test]
fn a_flood_of_delete_events_neither_grows_memory_nor_floods_wfx() {
    let wfx = HostileWfx::start(no_jobs, |s, _, stop| {
        sse_head(s)?;
        let mut n = 0u64;
        endless(s, stop, || {
            n += 1;
            // Unique ids the agent can hold (200 bytes), and ids too long to be one (1000
            // bytes): the first must not grow its set of deleted ids, the second its log.
            let id = if n % 2 == 0 {
                format!("{n:0>200}")
            } else {
                format!("{n:0>1000}")
            };
            format!("data: {{\"action\":\"DELETE\",\"job\":{{\"id\":\"{id}\"}}}}\n\n").into_bytes()
        })
    });
    survives(wfx, "60s", "", |r| {
        let n = r.wfx.lists();
        eprintln!("{n} listings in {PHASE:?} of DELETE events");
        // The start's listing, the stream's connect, then one per second at most.
        assert!(
            n <= 2 + PHASE.as_secs() as usize + 1,
            "{n} listings: events are not coalesced"
        );
        // Unreadable events: one warning a minute at most, however many come.
        let warned = r.log().matches("skipping an unreadable wfx event").count();
        assert!(
            (1..=2).contains(&warned),
            "{warned} warnings about unreadable events"
        );
    });
}

#[test]
fn a_silent_stream_and_a_silent_listing_are_given_up() {
    let wfx = HostileWfx::start(|_, _, stop| hold(stop), |_, _, stop| hold(stop));
    survives(wfx, "2s", TIMEOUTS, |r| {
        let (lists, events) = (r.wfx.lists(), r.wfx.events());
        eprintln!("{lists} listings, {events} event streams in {PHASE:?}");
        assert!(
            lists >= 3,
            "a silent listing is given up and retried: {lists}"
        );
        assert!(
            events >= 2,
            "a silent stream is given up and reconnected: {events}"
        );
    });
}

#[test]
fn dribbling_answers_are_given_up() {
    let wfx = HostileWfx::start(
        |s, _, stop| {
            dribble(
                s,
                stop,
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\nConnection: close\r\n\r\n",
                "{\"content\":[".repeat(1000).as_bytes(),
                Duration::from_millis(200),
            )
        },
        |s, _, stop| {
            sse_head(s)?;
            // Bytes keep coming, but no line ever ends.
            dribble(
                s,
                stop,
                b"",
                "data: ".repeat(1000).as_bytes(),
                Duration::from_millis(200),
            )
        },
    );
    survives(wfx, "2s", TIMEOUTS, |r| {
        let (lists, events) = (r.wfx.lists(), r.wfx.events());
        eprintln!("{lists} listings, {events} event streams in {PHASE:?}");
        assert!(
            lists >= 3,
            "a dribbling listing is cut and retried: {lists}"
        );
        assert!(events >= 2, "a dribbling stream is reconnected: {events}");
    });
}

#[test]
fn pages_of_tiny_values_stop_at_the_byte_bound() {
    // Full pages whose jobs cost the parse most per byte: 2 bytes of JSON ("0,") per value of 32
    // bytes in memory. The first page fills the listing's byte bound; the next is not read.
    let wfx = HostileWfx::start(
        |s, req, _| {
            let zeros = "0,".repeat((1 << 20) / 50 / 2 - 100);
            let jobs: Vec<String> = (0..50)
                .map(|i| {
                    format!(
                        r#"{{"id":"tiny-{}","workflow":{{"name":"other.workflow"}},"definition":[{zeros}0]}}"#,
                        req.offset() + i
                    )
                })
                .collect();
            page(s, &jobs)
        },
        no_events,
    );
    survives(wfx, "2s", "", |r| {
        assert_logged(r, "working on those, the rest waits")
    });
}

#[test]
fn a_dribbling_error_answer_of_the_event_stream_is_cut() {
    // The event stream has no whole-request timeout (it lasts): its error answers need their own.
    let wfx = HostileWfx::start(no_jobs, |s, _, stop| {
        dribble(
            s,
            stop,
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n",
            "busy ".repeat(10_000).as_bytes(),
            Duration::from_millis(100),
        )
    });
    survives(wfx, "2s", TIMEOUTS, |r| {
        let events = r.wfx.events();
        eprintln!("{events} event stream requests in {PHASE:?}");
        assert!(
            events >= 3,
            "a dribbling error answer is cut and retried: {events}"
        );
        assert_logged(r, "wfx: 503: busy");
    });
}
