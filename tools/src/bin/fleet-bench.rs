//! Fleet bench: `FLEET_N` (default 200) `cip-update-agent run` processes against the wfx
//! emulator on loopback, each with its own state directory and client-id (no onboarding) and
//! the shipped defaults for every interval, no SWUpdate (its sockets do not exist). It prints:
//!
//! 1. requests per idle device-hour by kind (job list, status, event-stream connections, ...),
//!    counted over `FLEET_IDLE_SECS` (default 600) of an idle fleet and scaled, and the TCP
//!    connections each agent holds to wfx. The agents start together, so their periodic
//!    requests are in phase: a window shorter than a period (the shipped poll is 5 min) sees
//!    none of them or all, hence the default of two poll periods;
//! 2. RSS, PSS (`/proc/<pid>/smaps_rollup`) and CPU (`/proc/<pid>/stat`, over the idle window)
//!    per agent, median and max;
//! 3. the reconnect spread after an outage: wfx is stopped (connections refused) for
//!    `FLEET_OUTAGE_SECS` (default 90) and started again on the same ports; the time from the
//!    restart to the first and to the last agent's event-stream reconnect;
//! 4. pickup latency: one job per agent (created `FLEET_CREATE_GAP_MS`, default 50, apart),
//!    from its creation to the agent's first status update of it, p50/p99/max (the install
//!    then waits for the absent SWUpdate);
//! 5. the request rate of a job waiting for the absent SWUpdate: one agent alone, its job's
//!    requests to wfx and to the artifact server over `FLEET_WAIT_SECS` (default 60) from the
//!    job's creation, per minute.
//!
//! `FLEET_AGENT_BIN` runs another agent binary (e.g. a baseline build). Every process started
//! here is killed when the bench ends, on error, SIGINT or SIGTERM too.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::io::Write as _;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use cip_update_agent_tests::daemons::agent::agent_bin;
use cip_update_agent_tests::daemons::process::GroupChild;
use cip_update_agent_tests::emulators::wfx::faults::LoggedRequest;
use cip_update_agent_tests::emulators::wfx::{Options, Side, WfxEmulator};
use cip_update_agent_tests::servers::raw_http::{RawServer, read_head};
use serde_json::{Value, json};

/// wfx's direct DAU workflow: the job starts in INSTALL.
const DIRECT: &str = "wfx.workflow.dau.direct";
/// The artifact served to every job (its bytes never reach an SWUpdate).
const ARTIFACT_LEN: usize = 1 << 20;
/// How often the waits below look again.
const TICK: Duration = Duration::from_millis(200);

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    match std::env::var(name) {
        Ok(v) => v.parse().with_context(|| format!("{name}={v}")),
        Err(_) => Ok(default),
    }
}

struct Settings {
    n: usize,
    idle: Duration,
    outage: Duration,
    wait: Duration,
    create_gap: Duration,
    pickup_timeout: Duration,
    reconnect_timeout: Duration,
    agent: PathBuf,
}

/// One agent process (killed with its group when dropped).
struct Agent {
    id: String,
    child: GroupChild,
    dir: PathBuf,
}

impl Agent {
    fn pid(&self) -> u32 {
        self.child.pid()
    }

    fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.dir.join("agent.err")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

/// The agents, stopped all at once (SIGTERM to every group, then each reaped) when dropped.
#[derive(Default)]
struct Fleet {
    agents: Vec<Agent>,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for a in &self.agents {
            let _ = a.child.signal_group(nix::sys::signal::Signal::SIGTERM);
        }
        // Each drop waits for its group to be gone (SIGKILL after a grace period).
        self.agents.clear();
    }
}

/// The artifact server: counts requests, answers every one with the same bytes.
struct Artifacts {
    server: RawServer,
    requests: Arc<AtomicU64>,
}

impl Artifacts {
    fn start() -> anyhow::Result<Artifacts> {
        let requests = Arc::new(AtomicU64::new(0));
        let counted = requests.clone();
        let server = RawServer::start(move |mut s: TcpStream, _stop: &AtomicBool| {
            if let Ok(Some(_)) = read_head(&mut s) {
                counted.fetch_add(1, Ordering::SeqCst);
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\
                     Content-Length: {ARTIFACT_LEN}\r\nConnection: close\r\n\r\n"
                );
                let _ = s.write_all(head.as_bytes());
                let _ = s.write_all(&vec![0u8; ARTIFACT_LEN]);
            }
        })?;
        Ok(Artifacts { server, requests })
    }

    fn url(&self) -> String {
        self.server.url("fleet.swu")
    }

    fn count(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }
}

fn main() -> anyhow::Result<()> {
    let agent = match std::env::var_os("FLEET_AGENT_BIN") {
        Some(p) => {
            let p = PathBuf::from(p);
            ensure!(p.is_file(), "FLEET_AGENT_BIN={} is not a file", p.display());
            p
        }
        None => agent_bin()?,
    };
    let s = Settings {
        n: env_or("FLEET_N", 200)?,
        idle: Duration::from_secs(env_or("FLEET_IDLE_SECS", 600)?),
        outage: Duration::from_secs(env_or("FLEET_OUTAGE_SECS", 90)?),
        wait: Duration::from_secs(env_or("FLEET_WAIT_SECS", 60)?),
        create_gap: Duration::from_millis(env_or("FLEET_CREATE_GAP_MS", 50)?),
        pickup_timeout: Duration::from_secs(env_or("FLEET_PICKUP_TIMEOUT_SECS", 420)?),
        reconnect_timeout: Duration::from_secs(env_or("FLEET_RECONNECT_TIMEOUT_SECS", 600)?),
        agent,
    };
    ensure!(s.n > 0, "FLEET_N must be at least 1");
    ensure!(!s.idle.is_zero(), "FLEET_IDLE_SECS must be at least 1");
    ensure!(!s.wait.is_zero(), "FLEET_WAIT_SECS must be at least 1");
    check_fd_limit(s.n)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let started = Instant::now();
    // On SIGINT or SIGTERM the bench stops like on an error: what it started is dropped, so
    // killed (the agents run in process groups of their own, which no terminal signal reaches).
    runtime.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! {
            r = bench(&s) => r,
            _ = term.recv() => bail!("terminated"),
            _ = int.recv() => bail!("interrupted"),
        }
    })?;
    println!(
        "\nbench wall time: {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The bench process holds the emulator's sockets (an event stream per agent, and the
/// requests in flight): the soft limit on open files must leave room.
fn check_fd_limit(n: usize) -> anyhow::Result<()> {
    let limits = fs::read_to_string("/proc/self/limits")?;
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(soft) = soft {
        ensure!(
            soft >= 4 * n + 256,
            "the open files limit ({soft}) is too low for {n} agents: raise it (ulimit -n {})",
            4 * n + 256
        );
    }
    Ok(())
}

async fn bench(s: &Settings) -> anyhow::Result<()> {
    let work = tempfile::Builder::new().prefix("fleet-bench-").tempdir()?;
    let artifacts = Artifacts::start()?;
    let mut wfx = start_wfx(0, 0)?;
    let (south_port, north_port) = (port_of(&wfx.south_url())?, port_of(&wfx.north_url())?);
    let http = cip_update_agent::http::default_client();
    let clk_tck = clock_ticks();

    println!("agent binary: {}", s.agent.display());
    println!(
        "{} agents, shipped defaults for every interval, wfx emulator on 127.0.0.1:{south_port}, \
         no SWUpdate (absent sockets), {} CPU(s)",
        s.n,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );

    // ---- start the fleet
    let mut fleet = Fleet::default();
    let t = Instant::now();
    for i in 0..s.n {
        let id = format!("fleet-{i:04}");
        fleet
            .agents
            .push(spawn_agent(s, work.path(), &id, &wfx.south_url())?);
        // Not all at once on a small machine.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let ids: Vec<String> = fleet.agents.iter().map(|a| a.id.clone()).collect();
    let connected = wait_streams(&wfx, &ids, t, Duration::from_secs(120), &mut fleet).await?;
    ensure!(
        connected.len() == s.n,
        "only {} of {} agents opened their event stream within 120 s",
        connected.len(),
        s.n
    );
    println!(
        "started in {:.1} s (all event streams open)",
        t.elapsed().as_secs_f64()
    );
    // Past the start-up (first poll, first stream) before counting.
    tokio::time::sleep(Duration::from_secs(5)).await;

    // ---- 1 and 2: idle
    let cpu0 = cpu_ticks(&fleet)?;
    let t0 = Instant::now();
    tokio::time::sleep(s.idle).await;
    let t1 = Instant::now();
    let cpu1 = cpu_ticks(&fleet)?;
    let log = wfx.request_log();
    let window = t1 - t0;
    let mut counts = counts_by_key(log.iter().filter(|r| r.at >= t0 && r.at < t1));
    // The kinds an idle agent may make, shown even when none came.
    for key in [
        "south GET /jobs",
        "south GET /jobs/events",
        "south PUT /jobs/{id}/status",
    ] {
        counts.entry(key.to_owned()).or_default();
    }
    let scale = 3600.0 / window.as_secs_f64() / s.n as f64;
    println!(
        "\n== idle: {:.0} s, requests per device-hour by kind (count in the window)",
        window.as_secs_f64()
    );
    let mut total = 0;
    for (key, c) in &counts {
        println!(
            "  {:<48} {:>8.2}  ({c})",
            format!("{} [{key}]", kind(key)),
            *c as f64 * scale
        );
        total += c;
    }
    println!(
        "  {:<48} {:>8.2}  ({total})",
        "all requests",
        total as f64 * scale
    );
    let mut polls: HashMap<String, u64> = ids.iter().map(|i| (i.clone(), 0)).collect();
    for r in log.iter().filter(|r| r.at >= t0 && r.at < t1) {
        if r.key() == "south GET /jobs"
            && let Some(c) = query_value(&r.uri, "clientId")
            && let Some(n) = polls.get_mut(&c)
        {
            *n += 1;
        }
    }
    let polls: Vec<u64> = polls.into_values().collect();
    println!(
        "  job lists per agent in the window: min {}, median {}, max {}",
        polls.iter().min().copied().unwrap_or(0),
        median(&polls),
        max(&polls)
    );
    let conns = wfx_connections(&fleet, south_port)?;
    println!(
        "  TCP connections to wfx per agent at the end: median {}, max {} (event stream included)",
        median(&conns),
        conns.iter().max().copied().unwrap_or(0)
    );
    println!(
        "  open event streams at the emulator: {}",
        wfx.event_subscribers()
    );

    println!("\n== per agent (median / max over {} agents)", s.n);
    let mut rss = Vec::new();
    let mut pss = Vec::new();
    for a in &fleet.agents {
        let (r, p) = memory(a.pid())?;
        rss.push(r);
        pss.push(p);
    }
    // In ms (the kernel counts in ticks of 1/CLK_TCK s).
    let cpu: Vec<f64> = cpu0
        .iter()
        .zip(&cpu1)
        .map(|(a, b)| (b - a) as f64 / clk_tck * 1000.0)
        .collect();
    let cpu_total: Vec<f64> = cpu1.iter().map(|t| *t as f64 / clk_tck * 1000.0).collect();
    println!(
        "  RSS  {:>8.1} / {:>8.1} MiB",
        median(&rss) as f64 / 1024.0,
        max(&rss) as f64 / 1024.0
    );
    println!(
        "  PSS  {:>8.1} / {:>8.1} MiB",
        median(&pss) as f64 / 1024.0,
        max(&pss) as f64 / 1024.0
    );
    println!(
        "  CPU in the idle window {:>6.0} / {:>6.0} ms (ticks of {:.0} ms); per idle hour {:.0} ms",
        median_f(&cpu),
        max_f(&cpu),
        1000.0 / clk_tck,
        median_f(&cpu) * 3600.0 / window.as_secs_f64()
    );
    let mean = cpu.iter().sum::<f64>() / cpu.len() as f64;
    println!(
        "  CPU in the idle window, mean over the fleet {mean:.2} ms ({:.1} ms per idle hour)",
        mean * 3600.0 / window.as_secs_f64()
    );
    println!(
        "  CPU since start        {:>6.0} / {:>6.0} ms",
        median_f(&cpu_total),
        max_f(&cpu_total)
    );

    // ---- 3: outage and reconnect
    println!(
        "\n== outage: wfx stopped (connections refused) for {} s, then restarted on the same ports",
        s.outage.as_secs()
    );
    drop(wfx);
    tokio::time::sleep(s.outage).await;
    let up = Instant::now();
    wfx = start_wfx(south_port, north_port)?;
    let back = wait_streams(&wfx, &ids, up, s.reconnect_timeout, &mut fleet).await?;
    let mut times: Vec<Duration> = back.values().map(|t| *t - up).collect();
    times.sort();
    if times.len() < s.n {
        println!(
            "  only {} of {} agents reconnected within {} s",
            times.len(),
            s.n,
            s.reconnect_timeout.as_secs()
        );
    }
    if let (Some(first), Some(last)) = (times.first(), times.last()) {
        println!(
            "  from the restart: first reconnect {:.2} s, median {:.2} s, last {:.2} s; \
             first to last {:.2} s",
            first.as_secs_f64(),
            times[times.len() / 2].as_secs_f64(),
            last.as_secs_f64(),
            (*last - *first).as_secs_f64()
        );
        let end = up + *last;
        let burst = counts_by_key(wfx.request_log().iter().filter(|r| r.at <= end));
        let line: Vec<String> = burst
            .iter()
            .map(|(k, c)| format!("{} {c}", kind(k)))
            .collect();
        println!(
            "  requests from the restart to the last reconnect: {}",
            line.join(", ")
        );
    }

    // ---- 4: pickup latency
    println!(
        "\n== pickup: one job per agent, created {} ms apart; creation to the first status update",
        s.create_gap.as_millis()
    );
    let art0 = artifacts.count();
    let mut created: HashMap<String, Instant> = HashMap::new();
    for id in &ids {
        let at = Instant::now();
        let job = create_job(&http, &wfx, id, &artifacts.url()).await?;
        created.insert(job, at);
        tokio::time::sleep(s.create_gap).await;
    }
    let deadline = Instant::now() + s.pickup_timeout;
    let mut picked: HashMap<String, Duration> = HashMap::new();
    loop {
        for r in wfx.request_log() {
            if r.side != Side::South || r.method != "PUT" || r.route != "/jobs/{id}/status" {
                continue;
            }
            let Some(job) = job_of(&r.uri) else { continue };
            if let Some(c) = created.get(job) {
                picked.entry(job.to_owned()).or_insert(r.at - *c);
            }
        }
        if picked.len() == created.len() || Instant::now() >= deadline {
            break;
        }
        check_alive(&mut fleet)?;
        tokio::time::sleep(TICK).await;
    }
    let mut lat: Vec<Duration> = picked.values().copied().collect();
    lat.sort();
    if lat.len() < created.len() {
        println!(
            "  {} of {} jobs had no status update within {} s",
            created.len() - lat.len(),
            created.len(),
            s.pickup_timeout.as_secs()
        );
    }
    if !lat.is_empty() {
        println!(
            "  p50 {:.3} s, p99 {:.3} s, max {:.3} s ({} jobs)",
            percentile(&lat, 50).as_secs_f64(),
            percentile(&lat, 99).as_secs_f64(),
            lat[lat.len() - 1].as_secs_f64(),
            lat.len()
        );
    }
    println!(
        "  artifact requests meanwhile: {} (SWUpdate is absent)",
        artifacts.count() - art0
    );
    drop(fleet);

    // ---- 5: one job waiting for the absent SWUpdate
    println!(
        "\n== one agent alone, its job waiting for an absent SWUpdate, over {} s from the job's \
         creation",
        s.wait.as_secs()
    );
    let mut one = Fleet::default();
    one.agents
        .push(spawn_agent(s, work.path(), "fleet-wait", &wfx.south_url())?);
    let t = Instant::now();
    let ids = vec!["fleet-wait".to_owned()];
    let got = wait_streams(&wfx, &ids, t, Duration::from_secs(60), &mut one).await?;
    ensure!(!got.is_empty(), "the agent did not open its event stream");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let art0 = artifacts.count();
    let t0 = Instant::now();
    create_job(&http, &wfx, "fleet-wait", &artifacts.url()).await?;
    tokio::time::sleep(s.wait).await;
    let t1 = Instant::now();
    check_alive(&mut one)?;
    let per_min = 60.0 / (t1 - t0).as_secs_f64();
    let counts = counts_by_key(
        wfx.request_log()
            .iter()
            .filter(|r| r.at >= t0 && r.at < t1 && r.side == Side::South),
    );
    let wfx_total: u64 = counts.values().sum();
    for (key, c) in &counts {
        println!(
            "  {:<48} {:>8.2} /min  ({c})",
            format!("{} [{key}]", kind(key)),
            *c as f64 * per_min
        );
    }
    println!(
        "  {:<48} {:>8.2} /min  ({wfx_total})",
        "all wfx requests",
        wfx_total as f64 * per_min
    );
    let art = artifacts.count() - art0;
    println!(
        "  {:<48} {:>8.2} /min  ({art})",
        "artifact server requests",
        art as f64 * per_min
    );
    Ok(())
}

fn start_wfx(south: u16, north: u16) -> anyhow::Result<WfxEmulator> {
    WfxEmulator::start(Options {
        south_port: south,
        north_port: north,
        log_requests: true,
        ..Options::default()
    })
}

fn port_of(url: &str) -> anyhow::Result<u16> {
    let u = reqwest::Url::parse(url)?;
    u.port().context("a port")
}

fn spawn_agent(s: &Settings, work: &Path, id: &str, wfx_url: &str) -> anyhow::Result<Agent> {
    let dir = work.join(id);
    fs::create_dir_all(&dir)?;
    fs::write(dir.join("hwrevision"), "board 1.0\n")?;
    let config = format!(
        "state_dir = {state:?}\n\
         [device]\nclient_id = \"{id}\"\nhwrevision_file = {hw:?}\n\
         [wfx]\nurl = \"{wfx_url}\"\n\
         [swupdate]\ncontrol_socket = {ctl:?}\nprogress_socket = {prog:?}\n",
        state = dir.join("state"),
        hw = dir.join("hwrevision"),
        ctl = dir.join("absent/sockinstctrl"),
        prog = dir.join("absent/swupdateprog"),
    );
    let cfg = dir.join("agent.toml");
    fs::write(&cfg, config)?;
    let mut c = Command::new(&s.agent);
    c.arg("--config").arg(&cfg).arg("run");
    c.stdout(fs::File::create(dir.join("agent.out"))?);
    c.stderr(fs::File::create(dir.join("agent.err"))?);
    let child = GroupChild::spawn(c, id)?;
    Ok(Agent {
        id: id.to_owned(),
        child,
        dir,
    })
}

/// Fails, with its log, if an agent has exited.
fn check_alive(fleet: &mut Fleet) -> anyhow::Result<()> {
    for a in &mut fleet.agents {
        if let Some(st) = a.child.try_wait()? {
            bail!("agent {} exited ({st}):\n{}", a.id, a.log_tail());
        }
    }
    Ok(())
}

/// Waits (at most `timeout`) until each of `ids` has opened an event stream since `since`;
/// the first such request per client.
async fn wait_streams(
    wfx: &WfxEmulator,
    ids: &[String],
    since: Instant,
    timeout: Duration,
    fleet: &mut Fleet,
) -> anyhow::Result<HashMap<String, Instant>> {
    let wanted: HashSet<&str> = ids.iter().map(String::as_str).collect();
    let deadline = since + timeout;
    loop {
        let mut seen: HashMap<String, Instant> = HashMap::new();
        for r in wfx.request_log() {
            if r.at < since || r.route != "/jobs/events" || r.side != Side::South {
                continue;
            }
            if let Some(c) = query_value(&r.uri, "clientIds")
                && wanted.contains(c.as_str())
            {
                seen.entry(c).or_insert(r.at);
            }
        }
        if seen.len() == wanted.len() || Instant::now() >= deadline {
            return Ok(seen);
        }
        check_alive(fleet)?;
        tokio::time::sleep(TICK).await;
    }
}

/// A query parameter's value, percent-decoded (client-ids here need no more than that).
fn query_value(uri: &str, key: &str) -> Option<String> {
    let (_, q) = uri.split_once('?')?;
    q.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| decode(v))
    })
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The job id of `/api/wfx/v1/jobs/<id>/status`.
fn job_of(uri: &str) -> Option<&str> {
    let path = uri.split('?').next()?;
    let rest = path.split_once("/jobs/")?.1;
    rest.strip_suffix("/status")
}

async fn create_job(
    http: &reqwest::Client,
    wfx: &WfxEmulator,
    client: &str,
    url: &str,
) -> anyhow::Result<String> {
    let definition = json!({"version": "1.0", "type": ["firmware"],
        "artifacts": [{"name": "rootfs", "version": "1.1", "uri": url}]});
    let r = http
        .post(format!("{}/jobs", wfx.north_url()))
        .json(&json!({"clientId": client, "workflow": DIRECT, "definition": definition}))
        .send()
        .await
        .context("POST /jobs")?;
    let status = r.status();
    let body: Value = r.json().await.context("the created job")?;
    ensure!(status.is_success(), "POST /jobs: {status} {body}");
    Ok(body["id"].as_str().context("the job's id")?.to_owned())
}

fn counts_by_key<'a>(log: impl Iterator<Item = &'a LoggedRequest>) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for r in log {
        *m.entry(r.key()).or_default() += 1;
    }
    m
}

/// A readable name for a request key.
fn kind(key: &str) -> &'static str {
    match key {
        "south GET /jobs" => "job list",
        "south GET /jobs/events" => "event-stream connections",
        "south GET /jobs/{id}" => "job reads",
        "south PUT /jobs/{id}/status" => "status updates",
        "south GET /jobs/{id}/status" => "status reads",
        "south PUT /jobs/{id}/definition" => "definition updates",
        "south GET /jobs/{id}/definition" => "definition reads",
        k if k.starts_with("north ") => "(the bench, northbound)",
        _ => "other",
    }
}

/// `utime + stime` of every agent, in clock ticks.
fn cpu_ticks(fleet: &Fleet) -> anyhow::Result<Vec<u64>> {
    fleet
        .agents
        .iter()
        .map(|a| {
            let stat = fs::read_to_string(format!("/proc/{}/stat", a.pid()))?;
            // Fields after the command (which may hold spaces) start at field 3 (state).
            let rest = stat.rsplit_once(')').context("/proc/PID/stat")?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let utime: u64 = f.get(11).context("utime")?.parse()?;
            let stime: u64 = f.get(12).context("stime")?.parse()?;
            Ok(utime + stime)
        })
        .collect()
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// RSS and PSS in KiB.
fn memory(pid: u32) -> anyhow::Result<(u64, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .with_context(|| format!("/proc/{pid}/smaps_rollup"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        let line = text
            .lines()
            .find(|l| l.starts_with(name))
            .with_context(|| format!("{name} in smaps_rollup"))?;
        Ok(line.split_whitespace().nth(1).context("a value")?.parse()?)
    };
    Ok((field("Rss:")?, field("Pss:")?))
}

/// Established TCP connections from each agent to the emulator's southbound port.
fn wfx_connections(fleet: &Fleet, port: u16) -> anyhow::Result<Vec<usize>> {
    let mut to_wfx: HashSet<u64> = HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 || f[3] != "01" {
                continue;
            }
            let remote_port = f[2]
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if remote_port == Some(port)
                && let Ok(inode) = f[9].parse()
            {
                to_wfx.insert(inode);
            }
        }
    }
    let mut out = Vec::new();
    for a in &fleet.agents {
        let mut n = 0;
        for e in fs::read_dir(format!("/proc/{}/fd", a.pid()))? {
            let Ok(link) = fs::read_link(e?.path()) else {
                continue;
            };
            let link = link.to_string_lossy();
            if let Some(inode) = link
                .strip_prefix("socket:[")
                .and_then(|s| s.strip_suffix(']'))
                .and_then(|s| s.parse::<u64>().ok())
                && to_wfx.contains(&inode)
            {
                n += 1;
            }
        }
        out.push(n);
    }
    Ok(out)
}

fn median<T: Copy + Ord + Default>(v: &[T]) -> T {
    let mut v = v.to_vec();
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn max<T: Copy + Ord + Default>(v: &[T]) -> T {
    v.iter().max().copied().unwrap_or_default()
}

fn median_f(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn max_f(v: &[f64]) -> f64 {
    v.iter().copied().fold(0.0, f64::max)
}

/// Nearest rank.
fn percentile(sorted: &[Duration], p: usize) -> Duration {
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted[rank.min(sorted.len()) - 1]
}
