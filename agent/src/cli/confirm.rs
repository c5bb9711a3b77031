//! `cip-update-agent confirm`: ends the running slot's trial.

use super::exit;
use crate::config::Config;

/// Confirms the running slot if it is on trial; the exit code.
pub fn main(config: &Config) -> u8 {
    let boot = crate::boot::from_config(&config.boot);
    let status = match boot.read() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::FAILURE;
        }
    };
    let slot = status.booted.as_deref().unwrap_or("?");
    if !status.trial {
        println!(
            "nothing to confirm: slot {slot} is not on trial ({})",
            status.detail
        );
        return 0;
    }
    match boot.confirm() {
        Ok(()) => {
            println!("slot {slot} confirmed");
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            exit::FAILURE
        }
    }
}
