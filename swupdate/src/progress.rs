//! Progress-socket frames (`struct progress_msg`) in their three wire variants, and a sans-IO decoder
//! that recognises the variant of a running daemon.
//!
//! | variant | versions | handshake at connect | first u32 | frame |
//! |---|---|---|---|---|
//! | 2022.12 | 2022.12 - 2023.05 | none | 0 | 2416 |
//! | 2023.12 | 2023.12 - 2024.05 | none | 0x10000 | 2416 |
//! | 2024.12 | 2024.12 - 2025.05 | `{0x20000, "ACK\0"}` | 0x20000 | 2416 |
//! | 2025.12 | 2025.12 on | `{0x20000, "ACK\0"}` | 0x20000 | 2408, packed |
//!
//! 2025.12 packed the struct without changing the apiversion, so only the frame size tells it from
//! 2024.12. In `auto` the decoder looks at where the second frame starts, or, when a single frame
//! arrived and the daemon went quiet, at how many bytes that one write carried (the daemon sends a
//! whole frame per write). When neither tells, it says so instead of guessing.

use std::fmt;
use std::str::FromStr;

use crate::ipc::c_str;

/// Bytes of the handshake a 2024.12 or later daemon sends first (apiversion and its length).
pub const HANDSHAKE_LEN: usize = 8;
/// Frame size of the naturally aligned struct (2022.12 - 2025.05).
pub const NATURAL_FRAME: usize = 2416;
/// Frame size of the packed struct (2025.12 on).
pub const PACKED_FRAME: usize = 2408;
const INFO_CAP: usize = 2048;

const API_NONE: u32 = 0;
const API_2023: u32 = 0x0001_0000;
const API_2024: u32 = 0x0002_0000;

/// The progress wire variant of a daemon, named by the first release that spoke it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Wire {
    /// 2022.12 to 2023.05: no apiversion field.
    V2022_12,
    /// 2023.12 to 2024.05: apiversion 1.0, no handshake.
    V2023_12,
    /// 2024.12 to 2025.05: apiversion 2.0 and a handshake.
    V2024_12,
    /// 2025.12 on: the packed struct.
    V2025_12,
}

impl Wire {
    /// Every variant, oldest first.
    pub const ALL: [Wire; 4] = [
        Wire::V2022_12,
        Wire::V2023_12,
        Wire::V2024_12,
        Wire::V2025_12,
    ];

    /// Whether the daemon sends a handshake first.
    pub fn handshake(self) -> bool {
        self >= Wire::V2024_12
    }

    /// The size of one frame.
    pub fn frame_size(self) -> usize {
        if self == Wire::V2025_12 {
            PACKED_FRAME
        } else {
            NATURAL_FRAME
        }
    }

    fn apiversion(self) -> u32 {
        match self {
            Wire::V2022_12 => API_NONE,
            Wire::V2023_12 => API_2023,
            Wire::V2024_12 | Wire::V2025_12 => API_2024,
        }
    }

    fn packed(self) -> bool {
        self == Wire::V2025_12
    }
}

impl fmt::Display for Wire {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Wire::V2022_12 => "2022.12",
            Wire::V2023_12 => "2023.12",
            Wire::V2024_12 => "2024.12",
            Wire::V2025_12 => "2025.12",
        })
    }
}

/// The `wire` setting: a variant, or `auto` to recognise it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum WireSetting {
    /// Recognise the daemon's variant from its first frames.
    #[default]
    Auto,
    /// Expect this variant (a daemon whose stream cannot be told apart).
    Fixed(Wire),
}

impl FromStr for WireSetting {
    type Err = String;

    /// Takes `auto` or any SWUpdate release (`2025.05`, `2026.05.1`) and maps it to its variant.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "auto" {
            return Ok(WireSetting::Auto);
        }
        let bad = || {
            format!(
                "`{s}` is not a SWUpdate release: use \"auto\" or a version such as \"2025.05\""
            )
        };
        let mut parts = s.split('.');
        let year: u32 = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let month: u32 = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        if !(1..=12).contains(&month) || parts.any(|p| p.parse::<u32>().is_err()) {
            return Err(bad());
        }
        let v = (year, month);
        let wire = if v < (2022, 12) {
            return Err(format!(
                "SWUpdate {s} is older than 2022.12, which this agent does not support"
            ));
        } else if v < (2023, 12) {
            Wire::V2022_12
        } else if v < (2024, 12) {
            Wire::V2023_12
        } else if v < (2025, 12) {
            Wire::V2024_12
        } else {
            Wire::V2025_12
        };
        Ok(WireSetting::Fixed(wire))
    }
}

impl fmt::Display for WireSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireSetting::Auto => f.write_str("auto"),
            WireSetting::Fixed(w) => w.fmt(f),
        }
    }
}

/// `RECOVERY_STATUS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecoveryStatus {
    /// `IDLE`: no install.
    Idle,
    /// `START`: an install begins.
    Start,
    /// `RUN`: an install runs.
    Run,
    /// `SUCCESS`: the install succeeded.
    Success,
    /// `FAILURE`: the install failed.
    Failure,
    /// `DOWNLOAD`: SWUpdate's own download runs.
    Download,
    /// `DONE`: the daemon is done with the install.
    Done,
    /// `SUBPROCESS`: a message of a subprocess.
    Subprocess,
    /// `PROGRESS`: a handler's own progress.
    Progress,
}

impl RecoveryStatus {
    fn from_u32(v: u32) -> Option<RecoveryStatus> {
        use RecoveryStatus::*;
        Some(match v {
            0 => Idle,
            1 => Start,
            2 => Run,
            3 => Success,
            4 => Failure,
            5 => Download,
            6 => Done,
            7 => Subprocess,
            8 => Progress,
            _ => return None,
        })
    }
}

/// One decoded progress message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgressMsg {
    /// The daemon's state.
    pub status: RecoveryStatus,
    /// Download percentage (SWUpdate's own downloads).
    pub dwl_percent: u32,
    /// Bytes downloaded (SWUpdate's own downloads).
    pub dwl_bytes: u64,
    /// Images to install.
    pub nsteps: u32,
    /// The image being installed (1-based).
    pub cur_step: u32,
    /// Percentage of the current image.
    pub cur_percent: u32,
    /// The current image's name.
    pub cur_image: String,
    /// The current image's handler.
    pub hnd_name: String,
    /// The source type of the install (`sourcetype`).
    pub source: u32,
    /// Free text: the request's info at START, a handler's message otherwise.
    pub info: String,
}

/// Why the progress stream cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProgressError {
    #[error(
        "progress frame starts with {0:#010x}, not a SWUpdate apiversion (0, 0x10000 or 0x20000): not a SWUpdate progress socket, or a release newer than this agent knows"
    )]
    /// The first word is not an apiversion this client knows.
    ApiVersion(u32),
    /// A status this client does not know.
    #[error("progress frame has unknown status {0}")]
    Status(u32),
    /// An info length beyond the frame's buffer.
    #[error("progress frame has infolen {0}, more than its 2048-byte buffer")]
    InfoLen(u32),
    /// A frame of the wrong size for its variant.
    #[error("progress frame is {got} bytes, a {wire} frame is {expected}")]
    FrameSize {
        /// Its size.
        got: usize,
        /// The variant.
        wire: Wire,
        /// The variant's frame size.
        expected: usize,
    },
    #[error(
        "the daemon speaks the {seen} progress wire but `wire = \"{configured}\"` is configured; set `wire` to the daemon's release or \"auto\""
    )]
    /// The daemon speaks another variant than the configured one.
    Mismatch {
        /// The configured variant.
        configured: Wire,
        /// The variant seen.
        seen: &'static str,
    },
    #[error(
        "cannot tell the 2024.12 from the 2025.12 progress wire from {0} bytes; set `wire` to the daemon's release"
    )]
    /// Too few bytes to tell the variant: the bytes seen.
    Undecided(usize),
    #[error(
        "progress frames out of step: a {wire} frame starts with {expected:#x}, this one with {found:#x}; is `wire` the daemon's release?"
    )]
    /// A frame does not start where the variant says.
    OutOfSync {
        /// The variant.
        wire: Wire,
        /// The apiversion expected.
        expected: u32,
        /// The word found.
        found: u32,
    },
    /// The stream ended inside a frame: the bytes left over.
    #[error("progress stream ended inside a frame ({0} bytes left over)")]
    Truncated(usize),
}

/// Decodes one frame of a known variant.
pub fn decode_frame(wire: Wire, f: &[u8]) -> Result<ProgressMsg, ProgressError> {
    if f.len() != wire.frame_size() {
        return Err(ProgressError::FrameSize {
            got: f.len(),
            wire,
            expected: wire.frame_size(),
        });
    }
    let u = |at: usize| u32::from_le_bytes([f[at], f[at + 1], f[at + 2], f[at + 3]]);
    let api = u(0);
    if ![API_NONE, API_2023, API_2024].contains(&api) {
        return Err(ProgressError::ApiVersion(api));
    }
    if api != wire.apiversion() {
        return Err(ProgressError::Mismatch {
            configured: wire,
            seen: seen_by_apiversion(api),
        });
    }
    let status = RecoveryStatus::from_u32(u(4)).ok_or(ProgressError::Status(u(4)))?;
    // The packed struct drops the 4 padding bytes before the u64, everything after moves by 4.
    let (bytes_at, shift) = if wire.packed() { (12, 4) } else { (16, 0) };
    let dwl_bytes = u64::from_le_bytes(f[bytes_at..bytes_at + 8].try_into().expect("8 bytes"));
    let at = |natural: usize| natural - shift;
    let infolen = u(at(360));
    if infolen as usize > INFO_CAP {
        return Err(ProgressError::InfoLen(infolen));
    }
    let info_at = at(364);
    Ok(ProgressMsg {
        status,
        dwl_percent: u(8),
        dwl_bytes,
        nsteps: u(at(24)),
        cur_step: u(at(28)),
        cur_percent: u(at(32)),
        cur_image: c_str(&f[at(36)..at(36) + 256]),
        hnd_name: c_str(&f[at(292)..at(292) + 64]),
        source: u(at(356)),
        // Only infolen bytes are this message's: the buffer keeps older messages' text after them.
        info: String::from_utf8_lossy(&f[info_at..info_at + infolen as usize]).into_owned(),
    })
}

fn seen_by_apiversion(api: u32) -> &'static str {
    match api {
        API_NONE => "2022.12",
        API_2023 => "2023.12",
        _ => "2024.12 or 2025.12",
    }
}

fn is_handshake(b: &[u8]) -> bool {
    b.len() >= HANDSHAKE_LEN && b[0..4] == API_2024.to_le_bytes() && &b[4..8] == b"ACK\0"
}

/// Does a frame of the 2024.12+ family start at `at`? (apiversion and a plausible status)
fn frame_starts_at(b: &[u8], at: usize) -> bool {
    b.len() >= at + 8
        && b[at..at + 4] == API_2024.to_le_bytes()
        && u32::from_le_bytes(b[at + 4..at + 8].try_into().expect("4 bytes")) <= 8
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing seen yet: handshake or first frame still to come.
    Start,
    /// Handshake seen, 2024.12 or 2025.12 still open.
    HandshakeFamily,
    Decided(Wire),
}

/// Turns bytes read from the progress socket into messages.
#[derive(Debug)]
pub struct ProgressDecoder {
    setting: WireSetting,
    state: State,
    buf: Vec<u8>,
}

impl ProgressDecoder {
    /// A decoder of the `setting`'s variant.
    pub fn new(setting: WireSetting) -> Self {
        ProgressDecoder {
            setting,
            state: State::Start,
            buf: Vec::new(),
        }
    }

    /// The variant, once known.
    pub fn wire(&self) -> Option<Wire> {
        match self.state {
            State::Decided(w) => Some(w),
            _ => None,
        }
    }

    /// Feeds bytes as read; returns the whole messages they complete.
    pub fn push(&mut self, data: &[u8]) -> Result<Vec<ProgressMsg>, ProgressError> {
        self.buf.extend_from_slice(data);
        self.advance(false)
    }

    /// Called when the socket has been quiet for a while after some bytes: the daemon writes whole
    /// frames, so the amount buffered then tells the frame size when nothing else did.
    pub fn idle(&mut self) -> Result<Vec<ProgressMsg>, ProgressError> {
        self.advance(true)
    }

    /// End of stream: anything left over is a cut frame.
    pub fn finish(&mut self) -> Result<(), ProgressError> {
        match (self.state, self.buf.len()) {
            (_, 0) => Ok(()),
            (State::HandshakeFamily, n) if n >= PACKED_FRAME => Err(ProgressError::Undecided(n)),
            (_, n) => Err(ProgressError::Truncated(n)),
        }
    }

    fn advance(&mut self, idle: bool) -> Result<Vec<ProgressMsg>, ProgressError> {
        if self.state == State::Start {
            if self.buf.len() < HANDSHAKE_LEN {
                return Ok(Vec::new());
            }
            let handshake = is_handshake(&self.buf);
            let first = u32::from_le_bytes(self.buf[0..4].try_into().expect("4 bytes"));
            self.state = self.after_first_bytes(handshake, first)?;
            if handshake {
                self.buf.drain(..HANDSHAKE_LEN);
            }
        }
        if self.state == State::HandshakeFamily {
            match self.tell_frame_size(idle) {
                Some(w) => self.state = State::Decided(w),
                None => return Ok(Vec::new()),
            }
        }
        let State::Decided(wire) = self.state else {
            return Ok(Vec::new());
        };
        let size = wire.frame_size();
        let whole = self.buf.len() / size * size;
        let out = self.buf[..whole]
            .chunks_exact(size)
            .map(|f| {
                decode_frame(wire, f).map_err(|e| match e {
                    // The variant is settled: a bad first word means frames of another size.
                    ProgressError::Mismatch { .. } | ProgressError::ApiVersion(_) => {
                        ProgressError::OutOfSync {
                            wire,
                            expected: wire.apiversion(),
                            found: u32::from_le_bytes(f[0..4].try_into().expect("4 bytes")),
                        }
                    }
                    other => other,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.buf.drain(..whole);
        Ok(out)
    }

    /// Chooses what the first 8 bytes allow, checked against a fixed setting.
    fn after_first_bytes(&self, handshake: bool, api: u32) -> Result<State, ProgressError> {
        match (self.setting, handshake) {
            (WireSetting::Fixed(w), true) if !w.handshake() => Err(ProgressError::Mismatch {
                configured: w,
                seen: "2024.12 or 2025.12",
            }),
            (WireSetting::Fixed(w), false) if w.handshake() => Err(ProgressError::Mismatch {
                configured: w,
                seen: seen_by_apiversion(api),
            }),
            (WireSetting::Fixed(w), _) => Ok(State::Decided(w)),
            (WireSetting::Auto, true) => Ok(State::HandshakeFamily),
            (WireSetting::Auto, false) => match api {
                API_NONE => Ok(State::Decided(Wire::V2022_12)),
                API_2023 => Ok(State::Decided(Wire::V2023_12)),
                other => Err(ProgressError::ApiVersion(other)),
            },
        }
    }

    /// 2024.12 (2416) or 2025.12 (2408)? `None`: not yet known.
    fn tell_frame_size(&self, idle: bool) -> Option<Wire> {
        let b = &self.buf;
        if b.len() >= NATURAL_FRAME + 8 {
            let natural = frame_starts_at(b, NATURAL_FRAME);
            let packed = frame_starts_at(b, PACKED_FRAME);
            if natural != packed {
                return Some(if natural {
                    Wire::V2024_12
                } else {
                    Wire::V2025_12
                });
            }
        }
        if idle && !b.is_empty() {
            let natural = b.len() % NATURAL_FRAME == 0;
            let packed = b.len() % PACKED_FRAME == 0;
            if natural != packed {
                return Some(if natural {
                    Wire::V2024_12
                } else {
                    Wire::V2025_12
                });
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let p = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/frames/");
        std::fs::read(format!("{p}{name}")).unwrap()
    }

    const VERSIONS: [(&str, Wire); 6] = [
        ("2022.12", Wire::V2022_12),
        ("2023.12", Wire::V2023_12),
        ("2024.12", Wire::V2024_12),
        ("2025.05", Wire::V2024_12),
        ("2025.12", Wire::V2025_12),
        ("2026.05.1", Wire::V2025_12),
    ];

    fn decode_all(setting: WireSetting, bytes: &[u8]) -> Vec<ProgressMsg> {
        let mut d = ProgressDecoder::new(setting);
        let mut out = d.push(bytes).unwrap();
        out.extend(d.idle().unwrap());
        d.finish().unwrap();
        out
    }

    #[test]
    fn settings_map_releases_to_variants() {
        for (v, w) in VERSIONS {
            assert_eq!(v.parse::<WireSetting>(), Ok(WireSetting::Fixed(w)), "{v}");
        }
        assert_eq!("2023.05".parse(), Ok(WireSetting::Fixed(Wire::V2022_12)));
        assert_eq!("auto".parse(), Ok(WireSetting::Auto));
        assert!(
            "2021.11"
                .parse::<WireSetting>()
                .unwrap_err()
                .contains("older")
        );
        for bad in ["", "2025", "2025.13", "x.y", "2025.05.z", "Auto"] {
            assert!(bad.parse::<WireSetting>().is_err(), "{bad}");
        }
        for w in Wire::ALL {
            assert_eq!(
                w.to_string().parse::<WireSetting>(),
                Ok(WireSetting::Fixed(w))
            );
        }
    }

    /// Every recorded stream decodes, fixed and auto, to the same sequence.
    #[test]
    fn recorded_streams_of_every_version() {
        for (v, w) in VERSIONS {
            for run in ["success", "failure", "webupload"] {
                let bytes = fixture(&format!("progress-{v}-{run}.bin"));
                let fixed = decode_all(WireSetting::Fixed(w), &bytes);
                let auto = decode_all(WireSetting::Auto, &bytes);
                assert_eq!(fixed, auto, "{v} {run}");
                let hs = if w.handshake() { HANDSHAKE_LEN } else { 0 };
                assert_eq!(
                    fixed.len(),
                    (bytes.len() - hs) / w.frame_size(),
                    "{v} {run}"
                );
                let last = fixed.last().unwrap();
                let want = match run {
                    "failure" => RecoveryStatus::Failure,
                    _ => RecoveryStatus::Success,
                };
                let result = fixed
                    .iter()
                    .rev()
                    .find(|m| matches!(m.status, RecoveryStatus::Success | RecoveryStatus::Failure))
                    .unwrap();
                assert_eq!(result.status, want, "{v} {run}: last {last:?}");
                // DOWNLOAD frames may come before START (2022.12 webserver uploads).
                let first = fixed.iter().find(|m| m.status != RecoveryStatus::Download);
                assert_eq!(first.unwrap().status, RecoveryStatus::Start, "{v} {run}");
            }
        }
    }

    #[test]
    fn recorded_2024_12_success_fields() {
        let m = decode_all(WireSetting::Auto, &fixture("progress-2024.12-success.bin"));
        assert_eq!(m[0].info, "swframes-2024.12-success");
        assert_eq!(m[0].nsteps, 1);
        assert_eq!(m[0].source, 4);
        // RUN with stale info bytes beyond infolen: info must be empty.
        assert_eq!(m[2].status, RecoveryStatus::Run);
        assert_eq!(m[2].info, "");
        assert_eq!(m[2].cur_image, "payload.bin");
        assert_eq!(m[2].hnd_name, "rawfile");
        let percents: Vec<u32> = m
            .iter()
            .filter(|m| m.status == RecoveryStatus::Progress)
            .map(|m| m.cur_percent)
            .collect();
        assert_eq!(percents, [16, 32, 48, 64, 80, 96, 100]);
        assert_eq!(m[10].status, RecoveryStatus::Success);
    }

    /// The webupload runs are the only ones with download counters: they prove the 2025.12 move.
    #[test]
    fn download_bytes_of_natural_and_packed_frames() {
        for v in ["2022.12", "2024.12", "2025.12", "2026.05.1"] {
            let m = decode_all(
                WireSetting::Auto,
                &fixture(&format!("progress-{v}-webupload.bin")),
            );
            let last_dl = m
                .iter()
                .rev()
                .find(|m| m.status == RecoveryStatus::Download)
                .unwrap();
            assert_eq!(last_dl.dwl_bytes, 18944, "{v}");
            assert_eq!(last_dl.dwl_percent, 100, "{v}");
            let run = m
                .iter()
                .find(|m| m.status == RecoveryStatus::Run && m.cur_step == 1)
                .unwrap();
            assert_eq!(run.cur_image, "payload.bin", "{v}");
            assert_eq!(run.nsteps, 1, "{v}");
        }
    }

    /// 2022.12 leaves old bytes after the NUL of cur_image: cut at the first NUL.
    #[test]
    fn recorded_2022_12_names_are_cut_at_nul() {
        let m = decode_all(WireSetting::Auto, &fixture("progress-2022.12-success.bin"));
        for f in &m {
            assert!(!f.cur_image.contains('\0'));
            assert!(
                f.cur_image.is_empty() || f.cur_image == "payload.bin",
                "{f:?}"
            );
        }
    }

    /// Bytes arrive in any split: one byte at a time gives the same messages.
    #[test]
    fn byte_by_byte_feeding() {
        for (v, _) in VERSIONS {
            let bytes = fixture(&format!("progress-{v}-success.bin"));
            let whole = decode_all(WireSetting::Auto, &bytes);
            let mut d = ProgressDecoder::new(WireSetting::Auto);
            let mut out = Vec::new();
            for b in &bytes {
                out.extend(d.push(std::slice::from_ref(b)).unwrap());
            }
            out.extend(d.idle().unwrap());
            d.finish().unwrap();
            assert_eq!(out, whole, "{v}");
        }
    }

    /// A single 2025.12 frame after the handshake: decided by the size of the write, on idle.
    #[test]
    fn auto_decides_a_lone_frame_on_idle() {
        for (v, w) in [("2025.12", Wire::V2025_12), ("2024.12", Wire::V2024_12)] {
            let bytes = fixture(&format!("progress-{v}-failure.bin"));
            let one = &bytes[..HANDSHAKE_LEN + w.frame_size()];
            let mut d = ProgressDecoder::new(WireSetting::Auto);
            assert!(d.push(one).unwrap().is_empty(), "{v}: must not guess");
            assert_eq!(d.wire(), None);
            let m = d.idle().unwrap();
            assert_eq!(d.wire(), Some(w));
            assert_eq!(m.len(), 1);
            assert_eq!(m[0].status, RecoveryStatus::Start);
        }
    }

    #[test]
    fn handshake_only_is_not_a_frame() {
        let bytes = fixture("progress-2025.12-success.bin");
        let mut d = ProgressDecoder::new(WireSetting::Auto);
        assert!(d.push(&bytes[..HANDSHAKE_LEN]).unwrap().is_empty());
        assert!(d.idle().unwrap().is_empty());
        d.finish().unwrap();
    }

    #[test]
    fn fixed_setting_that_does_not_match_the_daemon() {
        let old = fixture("progress-2022.12-success.bin");
        let e = ProgressDecoder::new(WireSetting::Fixed(Wire::V2025_12))
            .push(&old)
            .unwrap_err();
        assert!(
            e.to_string().contains("`wire = \"2025.12\"` is configured"),
            "{e}"
        );
        let new = fixture("progress-2025.12-success.bin");
        let e = ProgressDecoder::new(WireSetting::Fixed(Wire::V2023_12))
            .push(&new)
            .unwrap_err();
        assert!(matches!(e, ProgressError::Mismatch { .. }), "{e}");
        // 2024.12 frames read as 2025.12: the sizes do not line up, caught at the second frame.
        let mid = fixture("progress-2024.12-success.bin");
        let e = ProgressDecoder::new(WireSetting::Fixed(Wire::V2025_12))
            .push(&mid)
            .unwrap_err();
        assert!(matches!(e, ProgressError::OutOfSync { .. }), "{e:?}");
        assert!(e.to_string().contains("out of step"), "{e}");
    }

    #[test]
    fn garbage_short_and_oversized_frames() {
        // Garbage: not an apiversion.
        let e = ProgressDecoder::new(WireSetting::Auto)
            .push(b"HTTP/1.1 200 OK\r\n")
            .unwrap_err();
        assert!(matches!(e, ProgressError::ApiVersion(_)), "{e}");
        // Unknown status.
        let mut f = fixture("progress-2022.12-success.bin")[..NATURAL_FRAME].to_vec();
        f[4] = 42;
        assert_eq!(
            decode_frame(Wire::V2022_12, &f),
            Err(ProgressError::Status(42))
        );
        // infolen beyond the buffer.
        let mut f = fixture("progress-2022.12-success.bin")[..NATURAL_FRAME].to_vec();
        f[360..364].copy_from_slice(&5000u32.to_le_bytes());
        assert_eq!(
            decode_frame(Wire::V2022_12, &f),
            Err(ProgressError::InfoLen(5000))
        );
        // Short and oversized frames.
        assert!(matches!(
            decode_frame(Wire::V2024_12, &f[..100]),
            Err(ProgressError::FrameSize { got: 100, .. })
        ));
        let mut big = f.clone();
        big.extend_from_slice(&[0; 8]);
        assert!(matches!(
            decode_frame(Wire::V2022_12, &big),
            Err(ProgressError::FrameSize { got: 2424, .. })
        ));
        // A stream cut inside a frame.
        let mut d = ProgressDecoder::new(WireSetting::Auto);
        d.push(&f[..1000]).unwrap();
        assert_eq!(d.finish(), Err(ProgressError::Truncated(1000)));
    }

    #[test]
    fn undecidable_stream_says_so() {
        // Handshake, then 2416 + 2408 bytes of zeros: no frame start anywhere, sizes ambiguous.
        let mut b = fixture("progress-2025.12-success.bin")[..HANDSHAKE_LEN].to_vec();
        b.extend(std::iter::repeat_n(0u8, NATURAL_FRAME + PACKED_FRAME));
        let mut d = ProgressDecoder::new(WireSetting::Auto);
        assert!(d.push(&b).unwrap().is_empty());
        assert!(d.idle().unwrap().is_empty());
        let e = d.finish().unwrap_err();
        assert!(e.to_string().contains("cannot tell"), "{e}");
    }
}
