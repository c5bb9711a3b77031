//! `cip-update-agent reboot`: runs `reboot.command` when an update waits for it.

use std::time::Duration;

use super::exit;
use crate::config::Config;

/// How long the reboot command may take to return.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Reboots into the armed slot (or anyway, with `force`); the exit code.
pub async fn main(config: &Config, force: bool) -> u8 {
    let boot = crate::boot::from_config(&config.boot);
    let pending = match boot.read() {
        Ok(s) => s.pending,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::FAILURE;
        }
    };
    match (&pending, force) {
        (Some(slot), _) => println!("rebooting into slot {slot}"),
        (None, true) => println!("no slot is armed; rebooting anyway (--force)"),
        (None, false) => {
            eprintln!("no update waits for a reboot (no slot is armed); --force reboots anyway");
            return exit::FAILURE;
        }
    }
    match crate::command::run_command(&config.reboot.command, COMMAND_TIMEOUT).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: reboot command: {e}");
            exit::FAILURE
        }
    }
}
