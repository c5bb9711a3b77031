//! Onboarding of cip-update-agent devices: a device without a client-id obtains one through the
//! wfx workflow `cip.workflow.onboarding` (see `README.md` of this crate for the protocol).
//!
//! - [`protocol`]: the workflow's names, the wire format of the status and the definition, and
//!   exactly what is signed;
//! - [`identity`]: the device's serial and model (DMI, device tree, configuration);
//! - [`keys`]: the device's ed25519 key (made on first start) and the fleet's key files;
//! - [`device`]: the device's decision for a job (a plain function);
//! - [`store`]: the stored outcome (the client-id), written atomically;
//! - [`operator`]: the fleet's decisions (allow list, naming template, the signed answer);
//! - [`northbound`]: the operator tool's wfx client (management API);
//! - [`signals`]: the stop request (SIGINT, SIGTERM) of the tool and the agent.
//!
//! The device side does no HTTP itself: the agent drives [`device::decide`] with its own wfx
//! client, so that one client (retries, TLS, proxy, headers) talks to wfx.

pub use ed25519_dalek;

pub mod device;
pub mod identity;
pub mod keys;
pub mod northbound;
pub mod operator;
pub mod protocol;
pub mod signals;
pub mod store;
