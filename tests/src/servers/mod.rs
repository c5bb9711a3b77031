//! Scripted servers that misbehave on purpose (or replay recordings).

pub mod cut_proxy;
pub mod hostile_http;
pub mod raw_http;
pub mod replay;
pub mod slow_http;
