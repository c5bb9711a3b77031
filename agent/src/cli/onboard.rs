//! `cip-update-agent onboard`: the client-id on stdout.

use cip_onboarding::signals::interrupted;

use super::exit;
use crate::config::Config;
use crate::onboard;

/// Obtains (or reads) the client-id and prints it; the exit code.
pub async fn main(config: &Config) -> u8 {
    let onboarding = onboard::client_id(config, onboard::OnRejection::Stop);
    tokio::select! {
        r = onboarding => match r {
            Ok(id) => {
                println!("{id}");
                0
            }
            Err(e @ onboard::OnboardError::Rejected(_)) => {
                eprintln!("error: {e}");
                exit::REJECTED
            }
            Err(e) => {
                eprintln!("error: {e}");
                exit::CONFIG
            }
        },
        () = interrupted() => exit::INTERRUPTED,
    }
}
