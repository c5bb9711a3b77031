//! A streaming writer of the cpio "crc" format (SVR4 newc with checksum).
//!
//! A `.swu` file is such an archive: SWUpdate accepts the "newc" (`070701`)
//! and "crc" (`070702`) variants, and verifies the checksum of every entry
//! of the latter. Writing the archive ourselves, instead of calling
//! `cpio -o`, lets tests build large images without staging files under
//! fixed names, and build archives the real tool cannot (e.g. an image
//! whose name differs from any file on disk).
//!
//! Format, per entry: a 110-byte ASCII header (magic `070702` and 13 fields
//! of 8 upper-case hex digits), the name with its trailing NUL, padding of
//! header+name to a multiple of 4, the data, padding of the data to a
//! multiple of 4. The archive ends with an empty entry named `TRAILER!!!`
//! and is padded with zeros to a multiple of 512 bytes, as GNU `cpio -o`
//! does. The checksum is the wrapping 32-bit sum of all data bytes; since it
//! sits in the header, before the data, it must be known before the data is
//! written: either the caller gives it (see [`Checksum`]) or
//! [`CpioWriter::append_file`] reads the file twice.
//!
//! The fields are set the way `cpio -o -H crc --reproducible -R 0:0` sets
//! them for regular files of mode 0644: inode numbers counted from 0, device
//! numbers 0, owner 0:0, one link, and an mtime of 0 unless set with
//! [`CpioWriter::set_mtime`]. The unit tests check that the output is byte
//! for byte what that command writes.

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::Path;

use anyhow::{Context as _, bail, ensure};

/// The magic of the "crc" variant (`070701` is plain newc, without checksum).
pub const MAGIC_CRC: &str = "070702";
/// Name of the entry that ends the archive.
pub const TRAILER: &str = "TRAILER!!!";
/// The archive is padded with zeros to a multiple of this, as `cpio -o` does.
pub const BLOCK_SIZE: u64 = 512;
/// Size of the fixed part of a header.
pub const HEADER_LEN: u64 = 110;

/// Mode of every regular file written: `S_IFREG | 0644`.
const FILE_MODE: u32 = 0o100_644;
/// Size of the copy buffer.
const COPY_BUF: usize = 1 << 20;

/// The running checksum of the cpio "crc" format: the sum of all data
/// bytes, each taken as an unsigned number, wrapping at 2^32.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Checksum(u32);

impl Checksum {
    /// A checksum of no data (0).
    pub fn new() -> Self {
        Self(0)
    }

    /// Adds `data` to the sum.
    pub fn update(&mut self, data: &[u8]) {
        // Summing in u64 cannot overflow for any slice that fits in memory
        // and lets the compiler vectorise the loop.
        let sum: u64 = data.iter().map(|&b| u64::from(b)).sum();
        // Truncation is the point: the format keeps the sum modulo 2^32.
        self.0 = self.0.wrapping_add(sum as u32);
    }

    /// The checksum of everything added so far.
    pub fn value(&self) -> u32 {
        self.0
    }

    /// The checksum of `data`.
    pub fn of(data: &[u8]) -> u32 {
        let mut c = Self::new();
        c.update(data);
        c.value()
    }

    /// Reads `reader` to its end; returns its length and checksum.
    pub fn of_reader(mut reader: impl Read) -> io::Result<(u64, u32)> {
        let mut c = Self::new();
        let mut len = 0u64;
        let mut buf = vec![0u8; COPY_BUF];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => return Ok((len, c.value())),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            c.update(&buf[..n]);
            len += n as u64;
        }
    }
}

/// Writes a cpio "crc" archive to `W`, one entry at a time, without holding
/// any entry's data in memory.
///
/// Call [`CpioWriter::finish`] at the end: it writes the trailer and the
/// padding. Dropping the writer without finishing leaves a truncated
/// archive (which is sometimes what a test wants).
#[derive(Debug)]
pub struct CpioWriter<W: Write> {
    inner: W,
    /// Bytes written so far.
    position: u64,
    next_ino: u32,
    mtime: u32,
}

impl<W: Write> CpioWriter<W> {
    /// Starts an archive on `inner`. Wrap files in a `BufWriter`: the writer
    /// issues small writes for headers and padding.
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            position: 0,
            next_ino: 0,
            mtime: 0,
        }
    }

    /// Sets the modification time (seconds since the epoch) stored in the
    /// headers of the entries appended from now on.
    pub fn set_mtime(&mut self, mtime: u32) {
        self.mtime = mtime;
    }

    /// Bytes written so far; after [`CpioWriter::finish`], the archive size.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Appends a regular file named `name` holding `data`.
    pub fn append_bytes(&mut self, name: &str, data: &[u8]) -> anyhow::Result<()> {
        self.append_reader(name, data.len() as u64, Checksum::of(data), data)
    }

    /// Appends a regular file named `name` with the contents of the file at
    /// `path`, streaming it: the file is read twice, once for the checksum
    /// and once to copy it, so it may be larger than memory.
    pub fn append_file(&mut self, name: &str, path: &Path) -> anyhow::Result<()> {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let (len, checksum) = Checksum::of_reader(BufReader::with_capacity(COPY_BUF, file))
            .with_context(|| format!("reading {}", path.display()))?;
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        self.append_reader(name, len, checksum, file)
            .with_context(|| format!("archiving {} as {name}", path.display()))
    }

    /// Appends a regular file named `name` whose `len` bytes are read from
    /// `reader`, with `checksum` computed beforehand (see [`Checksum`]).
    ///
    /// Reads exactly `len` bytes. Fails if the reader ends early or if the
    /// data does not match `checksum`; the archive is then unusable, since
    /// the header has already been written.
    pub fn append_reader(
        &mut self,
        name: &str,
        len: u64,
        checksum: u32,
        reader: impl Read,
    ) -> anyhow::Result<()> {
        ensure!(
            !name.is_empty() && !name.contains('\0'),
            "invalid cpio entry name {name:?}"
        );
        ensure!(name != TRAILER, "{TRAILER} is written by finish()");
        let Ok(size) = u32::try_from(len) else {
            bail!("{name}: {len} bytes do not fit the 32-bit size field of cpio newc/crc")
        };
        let ino = self.next_ino;
        self.next_ino += 1;
        self.write_header(name, ino, FILE_MODE, self.mtime, size, checksum)?;

        let mut reader = reader.take(len);
        let mut buf = vec![0u8; COPY_BUF.min(len.max(1) as usize)];
        let mut sum = Checksum::new();
        let mut copied = 0u64;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).with_context(|| format!("reading data of {name}")),
            };
            sum.update(&buf[..n]);
            self.write_all(&buf[..n])?;
            copied += n as u64;
        }
        ensure!(
            copied == len,
            "{name}: reader gave {copied} bytes, {len} were announced"
        );
        ensure!(
            sum.value() == checksum,
            "{name}: data checksum {:#x} differs from the announced {checksum:#x}",
            sum.value()
        );
        self.pad_to(4)
    }

    /// Writes the trailer entry and pads the archive with zeros to a
    /// multiple of [`BLOCK_SIZE`]; flushes and returns the inner writer.
    pub fn finish(mut self) -> anyhow::Result<W> {
        // GNU cpio writes the trailer with inode 0, mode 0 and one link.
        self.write_header(TRAILER, 0, 0, 0, 0, 0)?;
        self.pad_to(BLOCK_SIZE)?;
        self.inner.flush().context("flushing cpio archive")?;
        Ok(self.inner)
    }

    fn write_header(
        &mut self,
        name: &str,
        ino: u32,
        mode: u32,
        mtime: u32,
        size: u32,
        checksum: u32,
    ) -> anyhow::Result<()> {
        let name_size = u32::try_from(name.len() + 1).context("cpio entry name too long")?;
        let fields: [u32; 13] = [
            ino, mode, 0, // uid
            0, // gid
            1, // nlink
            mtime, size, 0, // devmajor
            0, // devminor
            0, // rdevmajor
            0, // rdevminor
            name_size, checksum,
        ];
        let mut header = String::with_capacity(HEADER_LEN as usize + name.len() + 1);
        header.push_str(MAGIC_CRC);
        for field in fields {
            header.push_str(&format!("{field:08X}"));
        }
        header.push_str(name);
        header.push('\0');
        self.write_all(header.as_bytes())?;
        self.pad_to(4)
    }

    fn pad_to(&mut self, align: u64) -> anyhow::Result<()> {
        let rem = self.position % align;
        if rem != 0 {
            let zeros = vec![0u8; (align - rem) as usize];
            self.write_all(&zeros)?;
        }
        Ok(())
    }

    fn write_all(&mut self, data: &[u8]) -> anyhow::Result<()> {
        self.inner.write_all(data).context("writing cpio archive")?;
        self.position += data.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt as _;
    use std::process::{Command, Stdio};
    use std::time::UNIX_EPOCH;

    /// Files of various sizes (all four paddings, empty, larger than the
    /// copy buffer) and names of various lengths (all header paddings).
    fn sample_files() -> Vec<(&'static str, Vec<u8>)> {
        let mut big = vec![0u8; COPY_BUF * 2 + 3];
        let mut x = 0x1234_5678u32;
        for b in &mut big {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *b = (x >> 24) as u8;
        }
        vec![
            ("sw-description", b"software = {};\n".to_vec()),
            ("a", b"hello".to_vec()),
            ("bb", vec![0xff; 6]),
            ("ccc", vec![]),
            ("dddd", vec![0x80; 7]),
            ("big.img", big),
        ]
    }

    fn write_ours(files: &[(&str, Vec<u8>)], dir: &Path) -> Vec<u8> {
        let mut w = CpioWriter::new(Vec::new());
        for (i, (name, data)) in files.iter().enumerate() {
            if i % 2 == 0 {
                w.append_bytes(name, data).expect("append_bytes");
            } else {
                let path = dir.join(format!("src-{i}"));
                fs::write(&path, data).expect("write source file");
                w.append_file(name, &path).expect("append_file");
            }
        }
        let pos_before = w.position();
        let out = w.finish().expect("finish");
        assert!(out.len() as u64 > pos_before);
        assert_eq!(out.len() as u64 % BLOCK_SIZE, 0);
        out
    }

    fn run_cpio(args: &[&str], dir: &Path, stdin: &[u8]) -> std::process::Output {
        let mut child = Command::new("cpio")
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn cpio (is it installed?)");
        let mut stdin_pipe = child.stdin.take().expect("cpio stdin");
        let input = stdin.to_vec();
        let feeder = std::thread::spawn(move || {
            // cpio may stop reading early on errors: ignore EPIPE.
            let _ = stdin_pipe.write_all(&input);
        });
        let out = child.wait_with_output().expect("wait for cpio");
        feeder.join().expect("stdin feeder thread");
        out
    }

    #[test]
    fn checksum_wraps() {
        assert_eq!(Checksum::of(b""), 0);
        assert_eq!(Checksum::of(b"hello"), 0x214);
        let mut c = Checksum(u32::MAX);
        c.update(&[2]);
        assert_eq!(c.value(), 1);
        let (len, sum) = Checksum::of_reader(&[1u8, 2, 3][..]).expect("of_reader");
        assert_eq!((len, sum), (3, 6));
    }

    #[test]
    fn identical_to_gnu_cpio_reproducible() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = sample_files();
        let ours = write_ours(&files, dir.path());

        let src = dir.path().join("gnu");
        fs::create_dir(&src).expect("mkdir");
        let mut list = String::new();
        for (name, data) in &files {
            let path = src.join(name);
            fs::write(&path, data).expect("write file");
            fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
            fs::File::options()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_modified(UNIX_EPOCH))
                .expect("set mtime");
            list.push_str(name);
            list.push('\n');
        }
        let gnu = run_cpio(
            &["-o", "-H", "crc", "--reproducible", "-R", "0:0"],
            &src,
            list.as_bytes(),
        );
        assert!(
            gnu.status.success(),
            "cpio -o: {}",
            String::from_utf8_lossy(&gnu.stderr)
        );
        assert_eq!(ours.len(), gnu.stdout.len(), "archive sizes differ");
        assert!(
            ours == gnu.stdout,
            "archive differs from `cpio -o -H crc --reproducible` at byte {:?}",
            ours.iter().zip(&gnu.stdout).position(|(a, b)| a != b)
        );
    }

    #[test]
    fn gnu_cpio_lists_verifies_and_extracts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = sample_files();
        let archive = write_ours(&files, dir.path());

        let list = run_cpio(&["-t", "-H", "crc"], dir.path(), &archive);
        assert!(list.status.success());
        let names: Vec<&str> = files.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            String::from_utf8_lossy(&list.stdout)
                .lines()
                .collect::<Vec<_>>(),
            names
        );

        // GNU cpio exits 0 even on checksum errors: judge by its messages.
        let verify = run_cpio(
            &["-i", "--only-verify-crc", "-H", "crc"],
            dir.path(),
            &archive,
        );
        let stderr = String::from_utf8_lossy(&verify.stderr);
        assert!(
            verify.status.success() && !stderr.contains("checksum error"),
            "{stderr}"
        );

        let out = dir.path().join("out");
        fs::create_dir(&out).expect("mkdir");
        let extract = run_cpio(&["-i", "-d", "-H", "crc"], &out, &archive);
        assert!(
            extract.status.success(),
            "{}",
            String::from_utf8_lossy(&extract.stderr)
        );
        for (name, data) in &files {
            let got = fs::read(out.join(name)).expect("extracted file");
            assert!(got == *data, "{name} extracted with other contents");
        }

        // The verification does catch a flipped byte (in "hello").
        let mut corrupt = archive.clone();
        let at = corrupt
            .windows(5)
            .position(|w| w == b"hello")
            .expect("find data");
        corrupt[at] ^= 1;
        let verify = run_cpio(
            &["-i", "--only-verify-crc", "-H", "crc"],
            dir.path(),
            &corrupt,
        );
        assert!(String::from_utf8_lossy(&verify.stderr).contains("a: checksum error"));
    }

    #[test]
    fn rejects_bad_input() {
        let mut w = CpioWriter::new(Vec::new());
        assert!(w.append_bytes("", b"x").is_err());
        assert!(w.append_bytes(TRAILER, b"x").is_err());
        assert!(w.append_reader("short", 10, 0, &b"abc"[..]).is_err());
        let mut w = CpioWriter::new(Vec::new());
        assert!(w.append_reader("badsum", 3, 7, &b"abc"[..]).is_err());
        let mut w = CpioWriter::new(Vec::new());
        assert!(w.append_reader("huge", 1 << 32, 0, io::empty()).is_err());
    }
}
