//! Emulators of services that cannot be installed on the test machines.

pub mod wfx;
