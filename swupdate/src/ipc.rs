//! Control-socket messages (`ipc_message` of SWUpdate's `network_ipc.h`).
//!
//! Every message is one fixed-size buffer whose layout depends on the C ABI of the daemon: `size_t`
//! is 8 bytes on LP64 (amd64, arm64) and 4 on ILP32 (armhf). The layouts are written out here as
//! explicit offsets rather than taken from the host's `repr(C)`, so an amd64 build and its tests say
//! exactly what an armhf device puts on the wire. Integers are little-endian: every CIP target is.

use std::fmt;

/// `IPC_MAGIC`, the first field of every control message.
pub const IPC_MAGIC: u32 = 0x1405_2001;
/// `SWUPDATE_API_VERSION`: the daemon NACKs an install request carrying anything else.
pub const API_VERSION: u32 = 1;

/// Offset of the `msgdata` union inside `ipc_message` (after `magic` and `type`).
const DATA: usize = 8;
/// `char info[512]` of the install request.
pub const INFO_LEN: usize = 512;
/// `software_set[256]` and `running_mode[256]`.
pub const SELECTION_LEN: usize = 256;
/// `desc[2048]` of GET_STATUS and `msg[2048]` of NOTIFY_STREAM.
const TEXT_LEN: usize = 2048;
/// `dwl_url.filename[256]` of SET_DELTA_URL (2025.12+): the delta handler's `zckfile` property.
pub const DELTA_FILENAME_LEN: usize = 256;
/// `dwl_url.url[1024]` of SET_DELTA_URL.
pub const DELTA_URL_LEN: usize = 1024;

/// The C data model of the daemon's build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Abi {
    /// 64-bit `long` and `size_t`: amd64, arm64.
    Lp64,
    /// 32-bit `long` and `size_t`: armhf.
    Ilp32,
}

/// Where the fields of `struct swupdate_request` sit, relative to the union.
struct RequestLayout {
    len_offset: usize,
    len_size: usize,
    info: usize,
    software_set: usize,
    running_mode: usize,
    disable_store_swu: usize,
}

const LP64: RequestLayout = RequestLayout {
    len_offset: 16, // after 4 bytes of padding that align size_t to 8
    len_size: 8,
    info: 24,
    software_set: 536,
    running_mode: 792,
    disable_store_swu: 1048,
};

const ILP32: RequestLayout = RequestLayout {
    len_offset: 12,
    len_size: 4,
    info: 16,
    software_set: 528,
    running_mode: 784,
    disable_store_swu: 1040,
};

impl Abi {
    /// The ABI this binary was built for, which is the daemon's on the same device.
    pub const fn native() -> Abi {
        if cfg!(target_pointer_width = "64") {
            Abi::Lp64
        } else {
            Abi::Ilp32
        }
    }

    /// Size of the whole `ipc_message`; the daemon reads exactly this many bytes in one read.
    pub const fn message_size(self) -> usize {
        match self {
            Abi::Lp64 => 3120,
            Abi::Ilp32 => 3104,
        }
    }

    const fn request(self) -> &'static RequestLayout {
        match self {
            Abi::Lp64 => &LP64,
            Abi::Ilp32 => &ILP32,
        }
    }
}

/// `msgtype` of `network_ipc.h`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum MsgType {
    /// `REQ_INSTALL`: start an install; the image follows on the socket.
    ReqInstall = 0,
    /// `ACK`: the request is taken.
    Ack = 1,
    /// `NACK`: the request is refused (the reply's text says why).
    Nack = 2,
    /// `GET_STATUS`: the daemon's state and one queued log line.
    GetStatus = 3,
    /// `POST_UPDATE`: run the post-update command (the daemon's reboot).
    PostUpdate = 4,
    /// `SWUPDATE_SUBPROCESS`: a message for a subprocess of the daemon.
    SwupdateSubprocess = 5,
    /// `SET_AES_KEY`: the key of encrypted images.
    SetAesKey = 6,
    /// `SET_UPDATE_STATE`: write the bootloader's `ustate`.
    SetUpdateState = 7,
    /// `GET_UPDATE_STATE`: read the bootloader's `ustate`.
    GetUpdateState = 8,
    /// `REQ_INSTALL_EXT`: an install request of the extended form.
    ReqInstallExt = 9,
    /// `SET_VERSIONS_RANGE`: the versions an install may have.
    SetVersionsRange = 10,
    /// `NOTIFY_STREAM`: subscribe to the daemon's log lines.
    NotifyStream = 11,
    /// `GET_HW_REVISION`: the board's hardware revision.
    GetHwRevision = 12,
    /// `SET_SWUPDATE_VARS`: write a variable of the daemon.
    SetSwupdateVars = 13,
    /// `GET_SWUPDATE_VARS`: read a variable of the daemon.
    GetSwupdateVars = 14,
    /// `SET_DELTA_URL`: the URL a delta handler fetches chunks from.
    SetDeltaUrl = 15,
}

impl MsgType {
    fn from_u32(v: u32) -> Option<MsgType> {
        use MsgType::*;
        Some(match v {
            0 => ReqInstall,
            1 => Ack,
            2 => Nack,
            3 => GetStatus,
            4 => PostUpdate,
            5 => SwupdateSubprocess,
            6 => SetAesKey,
            7 => SetUpdateState,
            8 => GetUpdateState,
            9 => ReqInstallExt,
            10 => SetVersionsRange,
            11 => NotifyStream,
            12 => GetHwRevision,
            13 => SetSwupdateVars,
            14 => GetSwupdateVars,
            15 => SetDeltaUrl,
            _ => return None,
        })
    }
}

/// `sourcetype`: who asks for the install (shown by SWUpdate and echoed in progress messages).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum SourceType {
    /// `SOURCE_UNKNOWN`.
    Unknown = 0,
    /// `SOURCE_WEBSERVER`: SWUpdate's web server.
    Webserver = 1,
    /// `SOURCE_SURICATTA`: SWUpdate's own update client.
    Suricatta = 2,
    /// `SOURCE_DOWNLOADER`: SWUpdate's downloader.
    Downloader = 3,
    /// `SOURCE_LOCAL`: a local client (the agent's default).
    Local = 4,
    /// `SOURCE_CHUNKS_DOWNLOADER`: the delta handler's chunk fetches.
    ChunksDownloader = 5,
}

impl SourceType {
    /// The source type of a wire value.
    pub fn from_u32(v: u32) -> Option<SourceType> {
        use SourceType::*;
        Some(match v {
            0 => Unknown,
            1 => Webserver,
            2 => Suricatta,
            3 => Downloader,
            4 => Local,
            5 => ChunksDownloader,
            _ => return None,
        })
    }
}

/// `enum run_type` of the install request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[repr(u32)]
pub enum RunType {
    /// Whatever the daemon was started with (`-n` or not).
    #[default]
    Default = 0,
    /// Parse and verify, write nothing.
    DryRun = 1,
    /// Install even if the daemon runs with `-n`.
    Install = 2,
}

/// The bootloader update state (`update_state_t`), one ASCII digit on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdateState {
    /// `STATE_OK`: no update pending.
    Ok,
    /// `STATE_INSTALLED`: installed, to be tested on the next boot.
    Installed,
    /// `STATE_TESTING`: booted into the new image, not yet confirmed.
    Testing,
    /// `STATE_FAILED`: the update failed.
    Failed,
    /// `STATE_NOT_AVAILABLE`: the bootloader has no state.
    NotAvailable,
    /// `STATE_ERROR`: reading the state failed.
    Error,
    /// `STATE_WAIT`: waiting (SWUpdate's internal).
    Wait,
    /// `STATE_IN_PROGRESS`: an install is running.
    InProgress,
}

impl UpdateState {
    /// The state's wire digit (`'0'`..`'7'`).
    pub fn to_digit(self) -> u8 {
        b'0' + self as u8
    }

    /// The state of a wire digit; `None` for an unknown one.
    pub fn from_digit(d: u8) -> Option<UpdateState> {
        use UpdateState::*;
        Some(match d {
            b'0' => Ok,
            b'1' => Installed,
            b'2' => Testing,
            b'3' => Failed,
            b'4' => NotAvailable,
            b'5' => Error,
            b'6' => Wait,
            b'7' => InProgress,
            _ => return None,
        })
    }
}

/// The fields of a REQ_INSTALL.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InstallRequest {
    /// Who asks (`None`: a local client).
    pub source: Option<SourceType>,
    /// Install or dry run.
    pub run: RunType,
    /// Length of the image when known, 0 otherwise (SWUpdate does not rely on it).
    pub len: u64,
    /// Free text echoed in the progress START message; at most 511 bytes.
    pub info: String,
    /// The software set to install (`-e` of SWUpdate), empty for the daemon's own.
    pub software_set: String,
    /// The running mode of the software set, empty for the daemon's own.
    pub running_mode: String,
    /// Do not keep a copy of the `.swu` (SWUpdate's `-o`).
    pub disable_store_swu: bool,
}

/// The longest `info` SWUpdate takes (char[512] with its NUL).
pub const INFO_MAX: usize = 511;

impl InstallRequest {
    /// An install (or a dry run) of `len` bytes (0: unknown) for the daemon's own software
    /// set; `info` cut to [`INFO_MAX`] bytes at a character boundary.
    pub fn new(dry_run: bool, len: u64, info: &str) -> InstallRequest {
        let mut end = info.len().min(INFO_MAX);
        while !info.is_char_boundary(end) {
            end -= 1;
        }
        InstallRequest {
            run: if dry_run {
                RunType::DryRun
            } else {
                RunType::Install
            },
            len,
            info: info[..end].to_owned(),
            ..Default::default()
        }
    }
}

/// A request that cannot be put on the wire.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EncodeError {
    /// A text longer than its field.
    #[error("{field} is {len} bytes, SWUpdate takes at most {max}")]
    TooLong {
        /// The field.
        field: &'static str,
        /// The text's length.
        len: usize,
        /// The field's room.
        max: usize,
    },
    /// A text with a NUL byte (the C side would cut it).
    #[error("{field} contains a NUL byte")]
    Nul {
        /// The field.
        field: &'static str,
    },
    /// An empty text where one is required.
    #[error("{field} is empty")]
    Empty {
        /// The field.
        field: &'static str,
    },
    /// The image length does not fit a 32-bit `size_t`.
    #[error("image length {0} does not fit the 32-bit size_t of this ABI")]
    LenOverflow(u64),
}

/// A reply that is not a control message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// A reply of the wrong size for the ABI.
    #[error("control reply is {got} bytes, expected {expected}")]
    Size {
        /// Its size.
        got: usize,
        /// The ABI's message size.
        expected: usize,
    },
    /// A reply without SWUpdate's magic number.
    #[error("control reply has magic {0:#010x}, expected {IPC_MAGIC:#010x}")]
    Magic(u32),
    /// A message type this client does not know.
    #[error("control reply has unknown type {0}")]
    Type(u32),
}

fn header(abi: Abi, kind: MsgType) -> Vec<u8> {
    let mut m = vec![0u8; abi.message_size()];
    m[0..4].copy_from_slice(&IPC_MAGIC.to_le_bytes());
    m[4..8].copy_from_slice(&(kind as u32).to_le_bytes());
    m
}

fn put_u32(m: &mut [u8], at: usize, v: u32) {
    m[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn get_u32(m: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([m[at], m[at + 1], m[at + 2], m[at + 3]])
}

fn get_i32(m: &[u8], at: usize) -> i32 {
    get_u32(m, at) as i32
}

/// Copies a C string into a fixed field, leaving room for its terminating NUL.
fn put_str(
    m: &mut [u8],
    at: usize,
    cap: usize,
    field: &'static str,
    s: &str,
) -> Result<(), EncodeError> {
    let b = s.as_bytes();
    if b.contains(&0) {
        return Err(EncodeError::Nul { field });
    }
    if b.len() >= cap {
        return Err(EncodeError::TooLong {
            field,
            len: b.len(),
            max: cap - 1,
        });
    }
    m[at..at + b.len()].copy_from_slice(b);
    Ok(())
}

/// A C string from a fixed field: up to the first NUL, the rest is stale buffer content.
pub(crate) fn c_str(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// REQ_INSTALL: the first message of an install connection.
pub fn encode_install(abi: Abi, req: &InstallRequest) -> Result<Vec<u8>, EncodeError> {
    let l = abi.request();
    let mut m = header(abi, MsgType::ReqInstall);
    put_u32(&mut m, DATA, API_VERSION);
    put_u32(
        &mut m,
        DATA + 4,
        req.source.unwrap_or(SourceType::Local) as u32,
    );
    put_u32(&mut m, DATA + 8, req.run as u32);
    let at = DATA + l.len_offset;
    if l.len_size == 8 {
        m[at..at + 8].copy_from_slice(&req.len.to_le_bytes());
    } else {
        let len = u32::try_from(req.len).map_err(|_| EncodeError::LenOverflow(req.len))?;
        put_u32(&mut m, at, len);
    }
    put_str(&mut m, DATA + l.info, INFO_LEN, "info", &req.info)?;
    put_str(
        &mut m,
        DATA + l.software_set,
        SELECTION_LEN,
        "software_set",
        &req.software_set,
    )?;
    put_str(
        &mut m,
        DATA + l.running_mode,
        SELECTION_LEN,
        "running_mode",
        &req.running_mode,
    )?;
    m[DATA + l.disable_store_swu] = u8::from(req.disable_store_swu);
    Ok(m)
}

/// GET_STATUS: asks for the state and pops one queued log line.
pub fn encode_get_status(abi: Abi) -> Vec<u8> {
    header(abi, MsgType::GetStatus)
}

/// NOTIFY_STREAM: turns the connection into a stream of every log line the daemon emits.
pub fn encode_notify_stream(abi: Abi) -> Vec<u8> {
    header(abi, MsgType::NotifyStream)
}

/// GET_UPDATE_STATE: reads the bootloader's `ustate` through the daemon.
pub fn encode_get_update_state(abi: Abi) -> Vec<u8> {
    header(abi, MsgType::GetUpdateState)
}

/// SET_UPDATE_STATE: writes the bootloader's `ustate` through the daemon.
pub fn encode_set_update_state(abi: Abi, state: UpdateState) -> Vec<u8> {
    let mut m = header(abi, MsgType::SetUpdateState);
    m[DATA] = state.to_digit();
    m
}

/// POST_UPDATE: runs the daemon's post-update command; `args` goes to it when not empty.
pub fn encode_post_update(abi: Abi, args: &str) -> Result<Vec<u8>, EncodeError> {
    let mut m = header(abi, MsgType::PostUpdate);
    // procmsg: source, cmd, timeout, len, buf[2048]
    put_str(&mut m, DATA + 16, TEXT_LEN, "post-update arguments", args)?;
    put_u32(&mut m, DATA + 12, args.len() as u32);
    Ok(m)
}

/// SET_DELTA_URL (SWUpdate 2025.12+): tells the daemon where the delta handler of the next
/// install fetches the chunks of the zchunk file named `filename`, for an image whose
/// sw-description has no `url` property or `url = "dynamic"`, and `zckfile = "<filename>"`.
/// The union is two char arrays, `filename[256]` at 0 and `url[1024]` at 256, so both ABIs put
/// them at the same offsets; only the message's total size differs.
pub fn encode_set_delta_url(abi: Abi, filename: &str, url: &str) -> Result<Vec<u8>, EncodeError> {
    let mut m = header(abi, MsgType::SetDeltaUrl);
    if filename.is_empty() {
        return Err(EncodeError::Empty { field: "filename" });
    }
    put_str(&mut m, DATA, DELTA_FILENAME_LEN, "filename", filename)?;
    put_str(&mut m, DATA + DELTA_FILENAME_LEN, DELTA_URL_LEN, "url", url)?;
    Ok(m)
}

/// A decoded control reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The message type.
    pub kind: MsgType,
    raw: Vec<u8>,
}

/// The answer to GET_STATUS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// The daemon's current state (RECOVERY_STATUS).
    pub current: i32,
    /// The result of the last install.
    pub last_result: i32,
    /// The daemon's error code.
    pub error: i32,
    /// One queued log line, empty when the queue is drained.
    pub desc: String,
}

/// One NOTIFY_STREAM message: a log line of the daemon.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    /// RECOVERY_STATUS at the time of the line (START 1, RUN 2, SUCCESS 3, FAILURE 4, ...).
    pub status: i32,
    /// The daemon's error code.
    pub error: i32,
    /// 1 error, 2 warning, 3 info, 4 debug/trace.
    pub level: i32,
    /// The log line.
    pub msg: String,
}

impl Reply {
    /// Parses a whole message. Only magic and type are trusted: the daemon answers in the request's
    /// buffer and zeroes only the first 128 data bytes, so the rest may be what we sent.
    pub fn decode(abi: Abi, m: &[u8]) -> Result<Reply, DecodeError> {
        if m.len() != abi.message_size() {
            return Err(DecodeError::Size {
                got: m.len(),
                expected: abi.message_size(),
            });
        }
        let magic = get_u32(m, 0);
        if magic != IPC_MAGIC {
            return Err(DecodeError::Magic(magic));
        }
        let t = get_u32(m, 4);
        let kind = MsgType::from_u32(t).ok_or(DecodeError::Type(t))?;
        Ok(Reply {
            kind,
            raw: m.to_vec(),
        })
    }

    /// The short text of a NACK or of a POST_UPDATE answer (`msg[128]`).
    pub fn text(&self) -> String {
        c_str(&self.raw[DATA..DATA + 128])
    }

    /// The reply as a GET_STATUS answer.
    pub fn status(&self) -> Status {
        let d = &self.raw[DATA..];
        Status {
            current: get_i32(d, 0),
            last_result: get_i32(d, 4),
            error: get_i32(d, 8),
            desc: c_str(&d[12..12 + TEXT_LEN]),
        }
    }

    /// The reply as a NOTIFY_STREAM message.
    pub fn notification(&self) -> Notification {
        let d = &self.raw[DATA..];
        Notification {
            status: get_i32(d, 0),
            error: get_i32(d, 4),
            level: get_i32(d, 8),
            msg: c_str(&d[12..12 + TEXT_LEN]),
        }
    }

    /// The digit of a GET_UPDATE_STATE answer.
    pub fn update_state(&self) -> Option<UpdateState> {
        UpdateState::from_digit(self.raw[DATA])
    }
}

impl fmt::Display for MsgType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_request_cuts_its_info_at_a_character_boundary() {
        let r = InstallRequest::new(true, 7, &"é".repeat(300));
        assert_eq!(r.run, RunType::DryRun);
        assert_eq!(r.len, 7);
        assert_eq!(
            r.info.len(),
            510,
            "255 two-byte characters: the 256th would pass 511"
        );
        assert!(r.software_set.is_empty() && r.running_mode.is_empty());
        assert_eq!(InstallRequest::new(false, 0, "x").run, RunType::Install);
    }

    fn u32_at(m: &[u8], at: usize) -> u32 {
        get_u32(m, at)
    }

    fn full_request() -> InstallRequest {
        InstallRequest {
            source: Some(SourceType::Downloader),
            run: RunType::DryRun,
            len: 0x0102_0304_0506_0708,
            info: "info-text".into(),
            software_set: "stable".into(),
            running_mode: "copy1".into(),
            disable_store_swu: true,
        }
    }

    #[test]
    fn total_sizes() {
        assert_eq!(Abi::Lp64.message_size(), 3120);
        assert_eq!(Abi::Ilp32.message_size(), 3104);
        for abi in [Abi::Lp64, Abi::Ilp32] {
            assert_eq!(encode_get_status(abi).len(), abi.message_size());
            assert_eq!(encode_notify_stream(abi).len(), abi.message_size());
            assert_eq!(encode_get_update_state(abi).len(), abi.message_size());
            assert_eq!(
                encode_set_update_state(abi, UpdateState::Ok).len(),
                abi.message_size()
            );
            assert_eq!(
                encode_post_update(abi, "").unwrap().len(),
                abi.message_size()
            );
            let req = InstallRequest {
                len: 1 << 20,
                ..full_request()
            };
            assert_eq!(encode_install(abi, &req).unwrap().len(), abi.message_size());
        }
    }

    #[test]
    fn native_abi_matches_pointer_width() {
        assert_eq!(
            Abi::native() == Abi::Lp64,
            std::mem::size_of::<usize>() == 8
        );
    }

    /// Offsets in the message (union offsets of IPC.md + 8 for magic and type).
    #[test]
    fn install_request_lp64_offsets() {
        let m = encode_install(Abi::Lp64, &full_request()).unwrap();
        assert_eq!(u32_at(&m, 0), 0x1405_2001);
        assert_eq!(u32_at(&m, 4), 0);
        assert_eq!(u32_at(&m, 8), 1, "apiversion at union 0");
        assert_eq!(u32_at(&m, 12), 3, "source at union 4");
        assert_eq!(u32_at(&m, 16), 1, "dry_run at union 8");
        assert_eq!(u32_at(&m, 20), 0, "padding before size_t");
        assert_eq!(&m[24..32], &0x0102_0304_0506_0708u64.to_le_bytes());
        assert_eq!(&m[32..42], b"info-text\0");
        assert_eq!(&m[8 + 536..8 + 543], b"stable\0");
        assert_eq!(&m[8 + 792..8 + 798], b"copy1\0");
        assert_eq!(m[8 + 1048], 1);
        // instmsg.len and buf follow the request struct: unused, zero.
        assert_eq!(u32_at(&m, 8 + 1056), 0);
        assert!(m[8 + 1060..].iter().all(|&b| b == 0));
    }

    #[test]
    fn install_request_ilp32_offsets() {
        let mut r = full_request();
        r.len = 123_456;
        let m = encode_install(Abi::Ilp32, &r).unwrap();
        assert_eq!(u32_at(&m, 8), 1);
        assert_eq!(u32_at(&m, 12), 3);
        assert_eq!(u32_at(&m, 16), 1);
        assert_eq!(u32_at(&m, 8 + 12), 123_456, "size_t len at union 12");
        assert_eq!(&m[8 + 16..8 + 26], b"info-text\0");
        assert_eq!(&m[8 + 528..8 + 535], b"stable\0");
        assert_eq!(&m[8 + 784..8 + 790], b"copy1\0");
        assert_eq!(m[8 + 1040], 1);
        // instmsg.len (at union 1044, after the request struct) and buf: unused, zero.
        assert!(m[8 + 1041..].iter().all(|&b| b == 0));
    }

    #[test]
    fn install_request_defaults_to_local_source() {
        let m = encode_install(Abi::Lp64, &InstallRequest::default()).unwrap();
        assert_eq!(u32_at(&m, 12), SourceType::Local as u32);
        assert_eq!(u32_at(&m, 16), 0);
    }

    #[test]
    fn ilp32_rejects_lengths_over_4gib() {
        let r = InstallRequest {
            len: 5 << 30,
            ..Default::default()
        };
        assert_eq!(
            encode_install(Abi::Ilp32, &r),
            Err(EncodeError::LenOverflow(5 << 30))
        );
        assert!(encode_install(Abi::Lp64, &r).is_ok());
    }

    #[test]
    fn strings_must_fit_with_their_nul() {
        let mut r = InstallRequest {
            info: "x".repeat(511),
            ..Default::default()
        };
        assert!(encode_install(Abi::Lp64, &r).is_ok());
        r.info.push('x');
        assert_eq!(
            encode_install(Abi::Lp64, &r),
            Err(EncodeError::TooLong {
                field: "info",
                len: 512,
                max: 511
            })
        );
        r.info = "a\0b".into();
        assert_eq!(
            encode_install(Abi::Lp64, &r),
            Err(EncodeError::Nul { field: "info" })
        );
    }

    #[test]
    fn update_state_digits() {
        for abi in [Abi::Lp64, Abi::Ilp32] {
            let m = encode_set_update_state(abi, UpdateState::Testing);
            assert_eq!(u32_at(&m, 4), 7);
            assert_eq!(m[8], b'2');
            assert!(m[9..].iter().all(|&b| b == 0));
            let g = encode_get_update_state(abi);
            assert_eq!(u32_at(&g, 4), 8);
        }
        for d in b'0'..=b'7' {
            assert_eq!(UpdateState::from_digit(d).unwrap().to_digit(), d);
        }
        assert_eq!(UpdateState::from_digit(b'8'), None);
    }

    #[test]
    fn post_update_carries_its_arguments() {
        let m = encode_post_update(Abi::Ilp32, "reboot").unwrap();
        assert_eq!(u32_at(&m, 4), 4);
        assert_eq!(u32_at(&m, 8 + 12), 6);
        assert_eq!(&m[8 + 16..8 + 23], b"reboot\0");
        let empty = encode_post_update(Abi::Lp64, "").unwrap();
        assert!(empty[8..].iter().all(|&b| b == 0));
    }

    /// `dwl_url` of network_ipc.h (2025.12+): filename[256] at union 0, url[1024] at 256, in
    /// both ABIs (char arrays need no alignment).
    #[test]
    fn set_delta_url_offsets_lp64_and_ilp32() {
        let url = "http://mirror.example/targets/rootfs.ext4.zck";
        for abi in [Abi::Lp64, Abi::Ilp32] {
            let m = encode_set_delta_url(abi, "rootfs.ext4.zck", url).unwrap();
            assert_eq!(m.len(), abi.message_size(), "{abi:?}");
            assert_eq!(u32_at(&m, 0), 0x1405_2001);
            assert_eq!(u32_at(&m, 4), 15, "SET_DELTA_URL is type 15");
            assert_eq!(&m[8..8 + 16], b"rootfs.ext4.zck\0");
            assert!(m[8 + 16..8 + 256].iter().all(|&b| b == 0));
            assert_eq!(&m[8 + 256..8 + 256 + url.len()], url.as_bytes());
            assert!(m[8 + 256 + url.len()..].iter().all(|&b| b == 0), "{abi:?}");
        }
        // The union ends 1280 bytes in; the rest of the message is zero.
        let m = encode_set_delta_url(Abi::Ilp32, "f", "u").unwrap();
        assert_eq!(m[8 + 256], b'u');
        assert!(m[8 + 1280..].iter().all(|&b| b == 0));
    }

    #[test]
    fn set_delta_url_fields_must_fit_with_their_nul() {
        let f255 = "f".repeat(255);
        let u1023 = "u".repeat(1023);
        let m = encode_set_delta_url(Abi::Lp64, &f255, &u1023).unwrap();
        assert_eq!(m[8 + 255], 0);
        assert_eq!(m[8 + 256 + 1023], 0);
        assert_eq!(
            encode_set_delta_url(Abi::Lp64, &"f".repeat(256), "u"),
            Err(EncodeError::TooLong {
                field: "filename",
                len: 256,
                max: 255
            })
        );
        assert_eq!(
            encode_set_delta_url(Abi::Ilp32, "f", &"u".repeat(1024)),
            Err(EncodeError::TooLong {
                field: "url",
                len: 1024,
                max: 1023
            })
        );
        assert_eq!(
            encode_set_delta_url(Abi::Lp64, "", "u"),
            Err(EncodeError::Empty { field: "filename" })
        );
    }

    fn fixture(name: &str) -> Vec<u8> {
        let p = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/frames/");
        std::fs::read(format!("{p}{name}")).unwrap()
    }

    #[test]
    fn recorded_acks_and_nacks_of_every_version() {
        for v in [
            "2022.12",
            "2023.12",
            "2024.12",
            "2025.05",
            "2025.12",
            "2026.05.1",
        ] {
            let ack = Reply::decode(Abi::Lp64, &fixture(&format!("control-ack-{v}.bin"))).unwrap();
            assert_eq!(ack.kind, MsgType::Ack, "{v}");
            let nack =
                Reply::decode(Abi::Lp64, &fixture(&format!("control-nack-{v}.bin"))).unwrap();
            assert_eq!(nack.kind, MsgType::Nack, "{v}");
        }
    }

    #[test]
    fn reply_errors() {
        let good = encode_get_status(Abi::Lp64);
        assert_eq!(
            Reply::decode(Abi::Lp64, &good[..100]),
            Err(DecodeError::Size {
                got: 100,
                expected: 3120
            })
        );
        assert!(matches!(
            Reply::decode(Abi::Ilp32, &good),
            Err(DecodeError::Size { .. })
        ));
        let mut bad = good.clone();
        bad[0] = 0;
        assert!(matches!(
            Reply::decode(Abi::Lp64, &bad),
            Err(DecodeError::Magic(_))
        ));
        let mut bad = good;
        bad[4] = 99;
        assert_eq!(Reply::decode(Abi::Lp64, &bad), Err(DecodeError::Type(99)));
    }

    #[test]
    fn status_and_notification_fields() {
        let mut m = header(Abi::Lp64, MsgType::Ack);
        m[8..12].copy_from_slice(&4i32.to_le_bytes());
        m[12..16].copy_from_slice(&3i32.to_le_bytes());
        m[16..20].copy_from_slice(&1i32.to_le_bytes());
        m[20..31].copy_from_slice(b"hello\0stale");
        let r = Reply::decode(Abi::Lp64, &m).unwrap();
        assert_eq!(
            r.status(),
            Status {
                current: 4,
                last_result: 3,
                error: 1,
                desc: "hello".into()
            }
        );
        let n = r.notification();
        assert_eq!((n.status, n.error, n.level), (4, 3, 1));
        assert_eq!(n.msg, "hello");
    }
}
