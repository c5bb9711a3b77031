//! A process owning a [`Publisher`], for the tests that need one to die (the last will is only
//! published when a connection is lost, not on a clean stop).
//!
//! `mqtt-publisher <url> <client-id> <states>`: connects, publishes the inventory and `<states>`
//! state changes (`bytes` = 1..=states, phase `downloading`), then waits forever (until killed).

use std::process::ExitCode;

use cip_update_agent::mqtt::{BrokerUrl, Inventory, MqttConfig, Phase, Publisher, State};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, client_id, states] = args.as_slice() else {
        eprintln!("usage: mqtt-publisher <url> <client-id> <states>");
        return ExitCode::from(2);
    };
    let url = match BrokerUrl::parse(url) {
        Ok(u) => u,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let Ok(states) = states.parse::<u64>() else {
        eprintln!("<states> must be a number");
        return ExitCode::from(2);
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let publisher = match Publisher::start(&MqttConfig::new(url), client_id) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        };
        publisher.inventory(Inventory::new());
        for i in 1..=states {
            let mut s = State::new(Phase::Downloading);
            s.bytes = Some(i);
            publisher.state(s);
        }
        println!("published");
        std::future::pending::<()>().await;
        ExitCode::SUCCESS
    })
}
