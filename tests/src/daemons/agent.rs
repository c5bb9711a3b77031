//! Locating and running the `cip-update-agent` binary under test.
//!
//! Integration tests of this crate run the agent as a separate process, the
//! way a device runs it. Cargo only exposes `CARGO_BIN_EXE_*` to tests of
//! the package that owns the binary, so the binary is found next to the
//! test executable instead: test binaries live in `<target>/<profile>/deps/`
//! and the agent in `<target>/<profile>/`. The `CIP_UPDATE_AGENT_BIN`
//! environment variable overrides this (e.g. to test a cross-built or
//! installed binary). The binaries of `cip-update-agent-tools` (kiosk-feed,
//! mqtt-publisher, ...) are found the same way, by [`tool_cmd`].

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

/// Environment variable naming the agent binary to test.
pub const AGENT_BIN_ENV: &str = "CIP_UPDATE_AGENT_BIN";
/// File name of the agent binary.
pub const AGENT_BIN_NAME: &str = "cip-update-agent";

/// The agent binary: `$CIP_UPDATE_AGENT_BIN` if set, else
/// `<target>/<profile>/cip-update-agent` next to the running test.
///
/// Fails, saying how to fix it, if the binary does not exist: `cargo test`
/// and `cargo nextest run -p cip-update-agent-tests` do not build it.
pub fn agent_bin() -> anyhow::Result<PathBuf> {
    if let Some(path) = env::var_os(AGENT_BIN_ENV) {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!("{AGENT_BIN_ENV}={} does not name a file", path.display());
        }
        return Ok(path);
    }
    let exe = env::current_exe().context("locating the running test executable")?;
    let path = profile_dir(&exe)
        .with_context(|| format!("no target directory above {}", exe.display()))?
        .join(AGENT_BIN_NAME);
    if !path.is_file() {
        bail!(
            "{} does not exist: run `cargo build -p cip-update-agent` first \
             (with the same profile as the tests), or set {AGENT_BIN_ENV}",
            path.display()
        );
    }
    Ok(path)
}

/// `<target>/<profile>` for an executable in `<target>/<profile>/deps/`
/// (tests) or directly in `<target>/<profile>/` (binaries).
fn profile_dir(exe: &Path) -> Option<&Path> {
    let parent = exe.parent()?;
    if parent.file_name().is_some_and(|n| n == "deps") {
        parent.parent()
    } else {
        Some(parent)
    }
}

/// A `Command` running the agent binary (see [`agent_bin`]).
pub fn agent_cmd() -> anyhow::Result<Command> {
    Ok(Command::new(agent_bin()?))
}

/// A `Command` running the operator tool `cip-onboarding`, built beside the agent
/// (`$CIP_ONBOARDING_BIN` overrides it).
pub fn onboarding_cmd() -> anyhow::Result<Command> {
    if let Some(path) = env::var_os("CIP_ONBOARDING_BIN") {
        return Ok(Command::new(path));
    }
    let path = agent_bin()?.with_file_name("cip-onboarding");
    if !path.is_file() {
        bail!(
            "{} does not exist: run `cargo build --workspace` first",
            path.display()
        );
    }
    Ok(Command::new(path))
}

/// A `Command` running `name`, a binary of another workspace package (e.g.
/// `cip-update-agent-tools`'s `kiosk-feed`), built beside the agent.
///
/// Cargo's `CARGO_BIN_EXE_*` only names binaries of the test's own package;
/// `cargo build --workspace` (run by `scripts/test` before the tests) builds
/// these. `$CIP_TOOLS_DIR` overrides the directory they are looked up in.
pub fn tool_cmd(name: &str) -> anyhow::Result<Command> {
    let dir = match env::var_os("CIP_TOOLS_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let exe = env::current_exe().context("locating the running test executable")?;
            profile_dir(&exe)
                .with_context(|| format!("no target directory above {}", exe.display()))?
                .to_path_buf()
        }
    };
    let path = dir.join(name);
    if !path.is_file() {
        bail!(
            "{} does not exist: run `cargo build --workspace` first \
             (with the same profile as the tests), or set CIP_TOOLS_DIR",
            path.display()
        );
    }
    Ok(Command::new(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_dir_of_tests_and_bins() {
        assert_eq!(
            profile_dir(Path::new("/t/debug/deps/harness-0123")),
            Some(Path::new("/t/debug"))
        );
        assert_eq!(
            profile_dir(Path::new("/t/release/cip-update-agent")),
            Some(Path::new("/t/release"))
        );
    }
}
