//! MQTT telemetry: the device reports its state, progress, inventory and liveness to a broker, so
//! that a fleet can be watched without polling the job server.
//!
//! Topics (see [`topics`]), all under `<prefix>/<client-id>/`:
//!
//! | leaf        | retained | QoS | payload                                  |
//! |-------------|----------|-----|------------------------------------------|
//! | `online`    | yes      | 1   | `online`; `offline` (last will, clean stop) |
//! | `state`     | yes      | 1   | [`State`], every change in order          |
//! | `progress`  | no       | 0   | [`Progress`], at most one per interval    |
//! | `inventory` | yes      | 1   | [`Inventory`]                             |
//!
//! Telemetry must never hold an update back: [`Publisher`]'s methods queue and return, the
//! connection lives in its own task, and a broker that is away is retried forever with a capped
//! backoff (see [`publisher`] for what is delivered across broker restarts, and [`outbox`] for
//! what is given up when the queue is full).

pub mod error;
pub mod outbox;
pub mod payload;
pub mod publisher;
pub mod timestamp;
pub mod topics;

// `[mqtt]` is part of the configuration; named here too, where telemetry is.
pub use crate::config::mqtt::{BrokerUrl, MqttConfig, Password, TopicPrefix};
pub use error::MqttError;
pub use payload::{Inventory, LastOutcome, Phase, Progress, State, UpdatePath};
pub use publisher::Publisher;
pub use topics::Topics;
