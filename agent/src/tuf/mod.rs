//! The agent's TUF modes over the [`cip_tuf`] client: the `tuf-client` command ([`cli`]) and
//! TUF-only mode ([`only`]). The gate of the daemon is [`crate::trust`].

pub mod cli;
pub mod only;
