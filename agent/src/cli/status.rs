//! `cip-update-agent status`: what the device runs and what the agent is doing.

use super::exit;
use crate::config::Config;

/// Prints the status, as text or JSON; the exit code.
pub fn main(config: &Config, json: bool) -> u8 {
    match crate::status::collect(config) {
        Ok(s) if json => match serde_json::to_string_pretty(&s) {
            Ok(t) => {
                println!("{t}");
                0
            }
            Err(e) => {
                eprintln!("error: {e}");
                exit::FAILURE
            }
        },
        Ok(s) => {
            print!("{}", crate::status::render(&s));
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            exit::CONFIG
        }
    }
}
