//! The [`Publisher`] handle and the task that owns the MQTT connection.
//!
//! # Delivery across broker restarts
//!
//! rumqttc alone does not keep QoS 1 messages across a broker restart: when a connection drops,
//! its event loop moves unacknowledged publishes (and whatever sat in its request channel) to a
//! `pending` list, and clears that list on the next CONNACK unless the broker reports
//! `session_present`. A clean session never has one, and a broker restarted without persistence
//! has none either; so those messages would be silently lost. The task therefore keeps the
//! reliability itself:
//! - state and inventory messages wait in the [`Outbox`] until connected, and are handed to
//!   rumqttc one at a time, the next only after the broker's PUBACK of the previous one; so they
//!   arrive in order, and one that was in flight when the connection dropped is sent again after
//!   the reconnect (QoS 1 is at-least-once: that one can arrive twice, never out of order);
//! - nothing is handed to rumqttc while disconnected, so its `pending` list never matters and a
//!   clean session (`clean_session = true`) is used: the broker keeps no state for the device;
//! - the event loop's `poll()` future is never cancelled (its writes are not cancel-safe): the
//!   task waits on it and on the handles' wake-ups together, and only drops it once it resolved.
//!
//! # Online, last will and stopping
//!
//! Every (re)connect publishes `online` (retained) on the online topic; the CONNECT carries a
//! retained last will `offline` there, which the broker publishes when the connection is lost
//! without a DISCONNECT (crash, power cut, network loss past the keepalive). A clean stop
//! ([`Publisher::shutdown`]) sends the queued state changes, then publishes `offline` (retained)
//! itself, then disconnects: a DISCONNECT discards the will, so without that publish the topic
//! would stay `online` after a clean stop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectReturnCode, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS,
    TlsConfiguration, Transport,
};
use serde::Serialize;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::error::MqttError;
use super::outbox::{DEFAULT_CAPACITY, Outbox, Reliable};
use super::payload::{Inventory, Progress, State};
use super::topics::{self, Topics};
use crate::config::mqtt::MqttConfig;

/// First wait before reconnecting; doubled after each failed attempt.
const BACKOFF_START: Duration = Duration::from_millis(100);
/// Longest wait between two connection attempts: a restarted broker is found within this.
const BACKOFF_CAP: Duration = Duration::from_secs(10);
/// How long [`Publisher::shutdown`] tries to deliver what is queued, `offline` and DISCONNECT.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(3);
/// rumqttc's request channel: the task hands it at most a few messages at a time.
const REQUEST_CHANNEL: usize = 16;

/// Publishes the device's telemetry; cheap to clone, `Send`, and never blocks the caller.
///
/// Dropping the last clone starts the same stop as [`Publisher::shutdown`] in the background,
/// with nobody waiting for it: if the runtime ends first, the connection just drops and the
/// broker publishes the last will.
#[derive(Clone, Debug)]
pub struct Publisher {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    shared: Arc<Shared>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shared.close();
    }
}

/// What the handles and the task share.
#[derive(Debug)]
struct Shared {
    outbox: Mutex<Outbox>,
    wake: Notify,
    closing: AtomicBool,
}

impl Shared {
    fn outbox(&self) -> MutexGuard<'_, Outbox> {
        // The outbox stays consistent whatever panicked while holding it.
        self.outbox.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }

    fn is_closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }
}

impl Publisher {
    /// Checks `cfg`, reads the TLS files and starts the connection task (which connects in the
    /// background, retrying forever). `client_id` is the device's wfx client-id.
    ///
    /// Must be called inside a Tokio runtime.
    pub fn start(cfg: &MqttConfig, client_id: &str) -> Result<Publisher, MqttError> {
        Self::start_with_capacity(cfg, client_id, DEFAULT_CAPACITY)
    }

    /// [`Publisher::start`] with room for `capacity` state changes while the broker is away.
    pub fn start_with_capacity(
        cfg: &MqttConfig,
        client_id: &str,
        capacity: usize,
    ) -> Result<Publisher, MqttError> {
        cfg.check()
            .map_err(|(key, message)| MqttError::Config { key, message })?;
        let topics = Topics::new(&cfg.topic_prefix, client_id)?;
        let options = options(cfg, client_id, &topics)?;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| MqttError::NoRuntime(e.to_string()))?;
        let shared = Arc::new(Shared {
            outbox: Mutex::new(Outbox::new(capacity)),
            wake: Notify::new(),
            closing: AtomicBool::new(false),
        });
        let (client, eventloop) = AsyncClient::new(options, REQUEST_CHANNEL);
        let conn = Connection {
            client,
            shared: Arc::clone(&shared),
            topics,
            progress_interval: cfg.progress_interval,
            connected: false,
            submitted: std::collections::VecDeque::new(),
            inflight: None,
            offline_pkid: None,
            last_progress: None,
            backoff: BACKOFF_START,
            url: cfg.url.to_string(),
        };
        let task = runtime.spawn(conn.run(eventloop));
        Ok(Publisher {
            inner: Arc::new(Inner {
                shared,
                task: Mutex::new(Some(task)),
            }),
        })
    }

    /// Queues a state change (retained, QoS 1; every change is delivered, in order, up to the
    /// outbox capacity: see [`super::outbox`]).
    pub fn state(&self, mut state: State) {
        // The retained state outlives the job: no credential and no control character in the
        // error text, whoever built it.
        state.last_error = state.last_error.as_deref().map(crate::redact::message);
        if let Some(l) = &mut state.last {
            l.message = crate::redact::message(&l.message);
        }
        if let Some(p) = self.payload(&state) {
            if self.inner.shared.outbox().push_state(p) {
                tracing::warn!("MQTT broker away too long: dropped the oldest queued state change");
            }
            self.inner.shared.wake.notify_one();
        }
    }

    /// Queues a progress report (QoS 0, not retained); a newer one replaces it if it was not
    /// sent yet, and at most one is sent per `progress_interval`.
    pub fn progress(&self, progress: Progress) {
        if let Some(p) = self.payload(&progress) {
            self.inner.shared.outbox().push_progress(p);
            self.inner.shared.wake.notify_one();
        }
    }

    /// Queues the inventory (retained, QoS 1); a newer one replaces it if it was not sent yet.
    pub fn inventory(&self, inventory: Inventory) {
        if let Some(p) = self.payload(&inventory) {
            self.inner.shared.outbox().push_inventory(p);
            self.inner.shared.wake.notify_one();
        }
    }

    /// Stops publishing: delivers the queued state changes and `offline` (retained), then
    /// disconnects, all within a few seconds; if the broker is away, gives up at once (the
    /// broker, if it saw the connection, publishes the last will `offline`). Later calls on any
    /// clone publish nothing.
    pub async fn shutdown(&self) {
        self.inner.shared.close();
        let task = self
            .inner
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            if let Err(e) = task.await {
                tracing::warn!("MQTT task ended abnormally: {e}");
            }
        }
    }

    fn payload(&self, value: &impl Serialize) -> Option<Vec<u8>> {
        if self.inner.shared.is_closing() {
            return None;
        }
        match serde_json::to_vec(value) {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::warn!("MQTT payload not serialisable: {e}");
                None
            }
        }
    }
}

/// The rumqttc options: clean session, last will, credentials, TLS.
fn options(cfg: &MqttConfig, client_id: &str, topics: &Topics) -> Result<MqttOptions, MqttError> {
    let mut o = MqttOptions::new(client_id, cfg.url.host.clone(), cfg.url.port);
    o.set_keep_alive(keepalive(cfg.keepalive)?);
    o.set_clean_session(true);
    o.set_last_will(LastWill::new(
        topics.online.clone(),
        topics::OFFLINE,
        QoS::AtLeastOnce,
        true,
    ));
    if let Some(user) = &cfg.username {
        let pass = cfg.password.as_ref().map(|p| p.expose()).unwrap_or("");
        o.set_credentials(user.clone(), pass);
    }
    if cfg.url.tls {
        let Some(ca_path) = &cfg.ca_file else {
            return Err(MqttError::Config {
                key: "mqtt.ca_file",
                message: "required by an mqtts:// url".to_owned(),
            });
        };
        let ca = read_pem("mqtt.ca_file", ca_path, "CERTIFICATE")?;
        let client_auth = match (&cfg.client_cert, &cfg.client_key) {
            (Some(c), Some(k)) => Some((
                read_pem("mqtt.client_cert", c, "CERTIFICATE")?,
                read_pem("mqtt.client_key", k, "PRIVATE KEY")?,
            )),
            _ => None,
        };
        o.set_transport(Transport::Tls(TlsConfiguration::Simple {
            ca,
            alpn: None,
            client_auth,
        }));
    }
    Ok(o)
}

fn keepalive(v: Duration) -> Result<Duration, MqttError> {
    crate::config::mqtt::check_keepalive(v).map_err(|message| MqttError::Config {
        key: "mqtt.keepalive",
        message,
    })
}

/// Reads a PEM file and checks it holds a `-----BEGIN ...<label>-----` block, so that a wrong
/// file is reported at start and not as an endless series of TLS failures.
fn read_pem(
    key: &'static str,
    path: &std::path::Path,
    label: &'static str,
) -> Result<Vec<u8>, MqttError> {
    let data = std::fs::read(path).map_err(|source| MqttError::ReadFile {
        key,
        path: path.to_owned(),
        source,
    })?;
    let text = String::from_utf8_lossy(&data);
    let found = text.lines().any(|l| {
        let l = l.trim();
        l.starts_with("-----BEGIN ") && l.ends_with(&format!("{label}-----"))
    });
    if !found {
        return Err(MqttError::Pem {
            key,
            path: path.to_owned(),
            message: if label == "CERTIFICATE" {
                "no PEM certificate in it"
            } else {
                "no PEM private key in it"
            },
        });
    }
    Ok(data)
}

/// What a publish handed to rumqttc was, to recognise its packet id when rumqttc reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Submitted {
    Online,
    Reliable,
    Progress,
    Offline,
}

/// The reliable message being delivered.
#[derive(Debug)]
struct Inflight {
    kind: Reliable,
    payload: Vec<u8>,
    /// Handed to rumqttc on the current connection.
    submitted: bool,
    /// Its packet id once rumqttc sent it.
    pkid: Option<u16>,
}

/// The connection task's state.
struct Connection {
    client: AsyncClient,
    shared: Arc<Shared>,
    topics: Topics,
    progress_interval: Duration,
    connected: bool,
    /// Publishes handed to rumqttc on this connection whose packet id is not known yet, in order
    /// (rumqttc sends its requests in order).
    submitted: std::collections::VecDeque<Submitted>,
    inflight: Option<Inflight>,
    /// The packet id of `offline` while stopping.
    offline_pkid: Option<u16>,
    last_progress: Option<Instant>,
    backoff: Duration,
    url: String,
}

/// What a turn of the task loop ends with.
enum Step {
    Continue,
    Stop,
}

impl Connection {
    async fn run(mut self, mut eventloop: EventLoop) {
        let mut deadline: Option<Instant> = None;
        loop {
            if self.shared.is_closing() && deadline.is_none() {
                if !self.connected {
                    tracing::debug!("MQTT stop while not connected");
                    return;
                }
                deadline = Some(Instant::now() + SHUTDOWN_TIMEOUT);
            }
            let event = {
                let poll = eventloop.poll();
                tokio::pin!(poll);
                loop {
                    self.feed();
                    let progress_due = self.progress_due();
                    tokio::select! {
                        ev = &mut poll => break ev,
                        () = self.shared.wake.notified() => {
                            if self.shared.is_closing() && deadline.is_none() {
                                if !self.connected {
                                    return;
                                }
                                deadline = Some(Instant::now() + SHUTDOWN_TIMEOUT);
                            }
                        }
                        () = sleep_until(progress_due) => {}
                        () = sleep_until(deadline) => {
                            tracing::warn!("MQTT stop: broker too slow, leaving without DISCONNECT");
                            return;
                        }
                    }
                }
            };
            match self.handle(event) {
                Step::Continue => {}
                Step::Stop => return,
            }
            if !self.connected && deadline.is_some() {
                return;
            }
            if !self.connected {
                // Wait before the next attempt, but stop at once if asked to.
                let wait = jitter(self.backoff);
                self.backoff = (self.backoff * 2).min(BACKOFF_CAP);
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = wait_closing(&self.shared) => return,
                }
            }
        }
    }

    /// Reacts to what the event loop reports.
    fn handle(&mut self, event: Result<Event, rumqttc::ConnectionError>) -> Step {
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                if ack.code != ConnectReturnCode::Success {
                    tracing::warn!(
                        "MQTT broker {} refused the connection: {:?}",
                        self.url,
                        ack.code
                    );
                    return Step::Continue;
                }
                tracing::info!("MQTT connected to {}", self.url);
                self.connected = true;
                self.backoff = BACKOFF_START;
                self.submitted.clear();
                if let Some(i) = &mut self.inflight {
                    i.submitted = false;
                    i.pkid = None;
                }
                self.submit(Submitted::Online, topics::ONLINE.as_bytes().to_vec());
            }
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => match self.submitted.pop_front() {
                Some(Submitted::Reliable) => {
                    if let Some(i) = &mut self.inflight {
                        i.pkid = Some(pkid);
                    }
                }
                Some(Submitted::Offline) => self.offline_pkid = Some(pkid),
                Some(Submitted::Online | Submitted::Progress) | None => {}
            },
            Ok(Event::Incoming(Packet::PubAck(ack))) => {
                if self.inflight.as_ref().and_then(|i| i.pkid) == Some(ack.pkid) {
                    self.inflight = None;
                } else if self.offline_pkid == Some(ack.pkid) {
                    if let Err(e) = self.client.try_disconnect() {
                        tracing::warn!("MQTT disconnect: {e}");
                        return Step::Stop;
                    }
                }
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                tracing::info!("MQTT disconnected cleanly from {}", self.url);
                return Step::Stop;
            }
            Ok(_) => {}
            Err(e) => {
                if self.connected {
                    tracing::warn!("MQTT connection to {} lost: {e}", self.url);
                } else {
                    tracing::debug!("MQTT connection to {} failed: {e}", self.url);
                }
                self.connected = false;
                self.submitted.clear();
                self.offline_pkid = None;
                if let Some(i) = &mut self.inflight {
                    // Sent again after the reconnect: rumqttc drops it (see the module doc).
                    i.submitted = false;
                    i.pkid = None;
                }
            }
        }
        Step::Continue
    }

    /// Hands rumqttc what can go now: the next reliable message once the previous one is
    /// acknowledged, a due progress report, and when stopping `offline` after the last state.
    fn feed(&mut self) {
        if !self.connected {
            return;
        }
        let closing = self.shared.is_closing();
        if self.inflight.is_none() {
            self.inflight = self
                .shared
                .outbox()
                .pop_reliable()
                .map(|(kind, payload)| Inflight {
                    kind,
                    payload,
                    submitted: false,
                    pkid: None,
                });
        }
        if let Some(i) = &self.inflight {
            if !i.submitted {
                let topic = match i.kind {
                    Reliable::State => self.topics.state.clone(),
                    Reliable::Inventory => self.topics.inventory.clone(),
                };
                let ok = self
                    .client
                    .try_publish(topic, QoS::AtLeastOnce, true, i.payload.clone())
                    .is_ok();
                if ok {
                    self.submitted.push_back(Submitted::Reliable);
                    if let Some(i) = &mut self.inflight {
                        i.submitted = true;
                    }
                }
            }
        } else if closing
            && !self.submitted.contains(&Submitted::Offline)
            && self.offline_pkid.is_none()
        {
            self.submit(Submitted::Offline, topics::OFFLINE.as_bytes().to_vec());
        }
        if closing {
            return;
        }
        let due = self
            .last_progress
            .is_none_or(|t| t.elapsed() >= self.progress_interval);
        if due {
            let payload = self.shared.outbox().take_progress();
            if let Some(p) = payload {
                let ok = self
                    .client
                    .try_publish(self.topics.progress.clone(), QoS::AtMostOnce, false, p)
                    .is_ok();
                if ok {
                    self.submitted.push_back(Submitted::Progress);
                } else {
                    tracing::debug!("MQTT progress dropped: request channel full");
                }
                self.last_progress = Some(Instant::now());
            }
        }
    }

    /// When to wake up for a progress report waiting for its interval.
    fn progress_due(&self) -> Option<Instant> {
        if !self.connected || self.shared.is_closing() || !self.shared.outbox().has_progress() {
            return None;
        }
        // checked: a progress interval built without the configuration's bound cannot panic.
        self.last_progress
            .map(|t| t.checked_add(self.progress_interval).unwrap_or(t))
    }

    /// Publishes the online topic's `online` or `offline` (retained, QoS 1).
    fn submit(&mut self, what: Submitted, payload: Vec<u8>) {
        match self
            .client
            .try_publish(self.topics.online.clone(), QoS::AtLeastOnce, true, payload)
        {
            Ok(()) => self.submitted.push_back(what),
            Err(e) => tracing::warn!("MQTT {what:?} not published: {e}"),
        }
    }
}

/// Sleeps until `at`, or forever if `None`.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Returns once [`Publisher::shutdown`] was called or the last handle dropped.
async fn wait_closing(shared: &Shared) {
    while !shared.is_closing() {
        shared.wake.notified().await;
    }
}

/// `d` plus up to a quarter of it at random, so that a fleet restarted with its broker does not
/// reconnect in lockstep.
fn jitter(d: Duration) -> Duration {
    d + d.mul_f64(fastrand::f64() / 4.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publisher_is_a_cheap_shareable_handle() {
        fn check<T: Clone + Send + Sync + 'static>() {}
        check::<Publisher>();
    }

    #[test]
    fn backoff_jitter_stays_within_a_quarter() {
        for _ in 0..100 {
            let j = jitter(Duration::from_secs(4));
            assert!(
                j >= Duration::from_secs(4) && j <= Duration::from_secs(5),
                "{j:?}"
            );
        }
    }

    #[test]
    fn pem_files_are_checked_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("k.pem");
        std::fs::write(
            &f,
            "-----BEGIN EC PRIVATE KEY-----\nAA==\n-----END EC PRIVATE KEY-----\n",
        )
        .unwrap();
        assert!(read_pem("mqtt.client_key", &f, "PRIVATE KEY").is_ok());
        let e = read_pem("mqtt.ca_file", &f, "CERTIFICATE")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            format!("mqtt.ca_file: {}: no PEM certificate in it", f.display())
        );
        let missing = dir.path().join("nope");
        let e = read_pem("mqtt.ca_file", &missing, "CERTIFICATE")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(&format!("mqtt.ca_file: {}: ", missing.display())),
            "{e}"
        );
    }

    #[test]
    fn start_outside_a_runtime_is_an_error_not_a_panic() {
        let cfg = MqttConfig::new(super::super::BrokerUrl::parse("mqtt://127.0.0.1:1").unwrap());
        let e = Publisher::start(&cfg, "dev").unwrap_err();
        assert!(matches!(e, MqttError::NoRuntime(_)), "{e}");
    }
}
