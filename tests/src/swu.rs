//! Building signed `.swu` update files.
//!
//! A `.swu` is a cpio "crc" archive (see [`crate::cpio`]) whose first entry
//! is `sw-description` (libconfig syntax here), followed by its CMS
//! signature `sw-description.sig`, then the images it lists. SWUpdate reads
//! the archive as a stream, so the order matters: it parses and verifies the
//! description before it sees any image, and checks each image against the
//! `sha256` written in the (signed) description.
//!
//! [`SwuBuilder`] writes such a file in two passes over each image (one for
//! its sha256 and cpio checksum, one to copy it), so images may be large
//! files that are never held in memory. Knobs for negative tests: a wrong
//! `sha256`, no signature, extra or entirely custom description text.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, ensure};
use sha2::{Digest as _, Sha256};

use crate::cpio::{Checksum, CpioWriter};
use crate::pki::TestCert;

/// Name of the description entry; SWUpdate requires it first.
pub const SW_DESCRIPTION: &str = "sw-description";
/// Name of the signature entry; SWUpdate requires it right after the description.
pub const SW_DESCRIPTION_SIG: &str = "sw-description.sig";

const BUF: usize = 1 << 20;

/// Where an image's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageData {
    /// Small images, held in memory.
    Bytes(Vec<u8>),
    /// Large images: streamed from this file (see [`write_random_file`]).
    File(PathBuf),
}

impl From<Vec<u8>> for ImageData {
    fn from(v: Vec<u8>) -> Self {
        Self::Bytes(v)
    }
}

impl From<&[u8]> for ImageData {
    fn from(v: &[u8]) -> Self {
        Self::Bytes(v.to_vec())
    }
}

impl From<PathBuf> for ImageData {
    fn from(p: PathBuf) -> Self {
        Self::File(p)
    }
}

impl From<&Path> for ImageData {
    fn from(p: &Path) -> Self {
        Self::File(p.to_path_buf())
    }
}

/// The SWUpdate handler that installs an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handler {
    /// `type = "raw"; device = "<device>";`: writes the image over the
    /// start of an existing file or block device. The handler does not
    /// create the device; [`SwuBuilder::build`] creates a missing one as an
    /// empty file unless told not to.
    Raw { device: PathBuf },
    /// `type = "rawfile"; path = "<path>";`: writes the image as a file,
    /// created (or replaced) by the handler.
    RawFile { path: PathBuf },
}

impl Handler {
    /// The file this handler writes.
    pub fn target(&self) -> &Path {
        match self {
            Handler::Raw { device } => device,
            Handler::RawFile { path } => path,
        }
    }
}

/// What to write as the image's `sha256` attribute.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Sha256Attr {
    /// The real sha256 of the data.
    #[default]
    Computed,
    /// This text instead (e.g. a wrong hash, for a negative test).
    Override(String),
    /// No `sha256` attribute at all.
    Omitted,
}

/// One entry of `images: ( ... )` and the archive member it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub filename: String,
    pub data: ImageData,
    pub handler: Handler,
    pub sha256: Sha256Attr,
    /// Extra libconfig settings of the image, one per item, e.g.
    /// `installed-directly = true;`.
    pub attributes: Vec<String>,
}

impl Image {
    /// An image installed by the `raw` handler onto `device`.
    pub fn raw(
        filename: impl Into<String>,
        data: impl Into<ImageData>,
        device: impl Into<PathBuf>,
    ) -> Self {
        Self::new(
            filename,
            data,
            Handler::Raw {
                device: device.into(),
            },
        )
    }

    /// An image installed by the `rawfile` handler as the file `path`.
    pub fn rawfile(
        filename: impl Into<String>,
        data: impl Into<ImageData>,
        path: impl Into<PathBuf>,
    ) -> Self {
        Self::new(filename, data, Handler::RawFile { path: path.into() })
    }

    /// An image with any handler.
    pub fn new(filename: impl Into<String>, data: impl Into<ImageData>, handler: Handler) -> Self {
        Self {
            filename: filename.into(),
            data: data.into(),
            handler,
            sha256: Sha256Attr::Computed,
            attributes: Vec::new(),
        }
    }

    /// Writes `sha256` as the image's hash instead of the real one.
    pub fn sha256_override(mut self, sha256: impl Into<String>) -> Self {
        self.sha256 = Sha256Attr::Override(sha256.into());
        self
    }

    /// Writes no `sha256` attribute.
    pub fn without_sha256(mut self) -> Self {
        self.sha256 = Sha256Attr::Omitted;
        self
    }

    /// Adds a libconfig setting to the image, e.g. `installed-directly = true;`.
    pub fn attribute(mut self, setting: impl Into<String>) -> Self {
        self.attributes.push(setting.into());
        self
    }
}

/// What [`SwuBuilder::build`] learnt about an image while archiving it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltImage {
    pub filename: String,
    /// The file the handler will write.
    pub target: PathBuf,
    pub len: u64,
    /// Real sha256 of the data (hex), whatever the description claims.
    pub sha256: String,
}

/// A `.swu` file written by [`SwuBuilder::build`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltSwu {
    pub path: PathBuf,
    /// Size of the whole file.
    pub len: u64,
    /// sha256 of the whole file (hex).
    pub sha256: String,
    /// The description text that was archived (and signed).
    pub sw_description: String,
    pub images: Vec<BuiltImage>,
}

/// Builds a `.swu` file; see the module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwuBuilder {
    version: String,
    hardware_compatibility: Vec<String>,
    images: Vec<Image>,
    extra: Vec<String>,
    custom_description: Option<String>,
    signed: bool,
    create_targets: bool,
}

impl Default for SwuBuilder {
    fn default() -> Self {
        Self {
            version: "1.0.0".into(),
            hardware_compatibility: vec!["1.0".into()],
            images: Vec::new(),
            extra: Vec::new(),
            custom_description: None,
            signed: true,
            create_targets: true,
        }
    }
}

impl SwuBuilder {
    /// Version "1.0.0", compatible with hardware revision "1.0" (what
    /// [`crate::swupdate::DaemonOptions`] announces by default), no images,
    /// signed.
    pub fn new() -> Self {
        Self::default()
    }

    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self
    }

    /// Replaces the `hardware-compatibility` list (revisions, without the
    /// board name).
    pub fn hardware_compatibility<S: Into<String>>(
        mut self,
        revisions: impl IntoIterator<Item = S>,
    ) -> Self {
        self.hardware_compatibility = revisions.into_iter().map(Into::into).collect();
        self
    }

    pub fn image(mut self, image: Image) -> Self {
        self.images.push(image);
        self
    }

    /// Appends libconfig text inside `software = { ... }`, after the images.
    pub fn extra(mut self, text: impl Into<String>) -> Self {
        self.extra.push(text.into());
        self
    }

    /// Archives `text` as `sw-description` instead of the generated one
    /// (images are still archived, and targets still created).
    pub fn custom_sw_description(mut self, text: impl Into<String>) -> Self {
        self.custom_description = Some(text.into());
        self
    }

    /// Leaves out `sw-description.sig`.
    pub fn unsigned(mut self) -> Self {
        self.signed = false;
        self
    }

    /// Whether [`SwuBuilder::build`] creates missing `raw` devices as empty
    /// files (default: yes; the `raw` handler fails on a missing device).
    pub fn create_targets(mut self, create: bool) -> Self {
        self.create_targets = create;
        self
    }

    /// Writes the `.swu` to `out`, signing the description with `cert`.
    pub fn build(&self, cert: &TestCert, out: &Path) -> anyhow::Result<BuiltSwu> {
        let sums = self
            .images
            .iter()
            .map(ImageSums::compute)
            .collect::<anyhow::Result<Vec<_>>>()?;
        let description = match &self.custom_description {
            Some(text) => text.clone(),
            None => self.render(&sums),
        };

        let signature = if self.signed {
            let work = tempfile::tempdir().context("tempdir for signing")?;
            let desc_path = work.path().join(SW_DESCRIPTION);
            let sig_path = work.path().join(SW_DESCRIPTION_SIG);
            fs::write(&desc_path, &description).context("writing sw-description")?;
            cert.sign(&desc_path, &sig_path)?;
            Some(fs::read(&sig_path).context("reading sw-description.sig")?)
        } else {
            None
        };

        let file = File::create(out).with_context(|| format!("creating {}", out.display()))?;
        let mut cpio = CpioWriter::new(HashingWriter::new(BufWriter::with_capacity(BUF, file)));
        cpio.append_bytes(SW_DESCRIPTION, description.as_bytes())?;
        if let Some(sig) = &signature {
            cpio.append_bytes(SW_DESCRIPTION_SIG, sig)?;
        }
        for (image, sums) in self.images.iter().zip(&sums) {
            match &image.data {
                ImageData::Bytes(data) => cpio.append_bytes(&image.filename, data)?,
                ImageData::File(path) => {
                    let file =
                        File::open(path).with_context(|| format!("opening {}", path.display()))?;
                    cpio.append_reader(&image.filename, sums.len, sums.checksum, file)
                        .with_context(|| format!("archiving {}", path.display()))?;
                }
            }
        }
        let hashing = cpio.finish()?;
        let len = hashing.written;
        let sha256 = hex::encode(hashing.hasher.finalize());

        if self.create_targets {
            for image in &self.images {
                if let Handler::Raw { device } = &image.handler {
                    if !device.exists() {
                        File::create(device)
                            .with_context(|| format!("creating raw target {}", device.display()))?;
                    }
                }
            }
        }

        Ok(BuiltSwu {
            path: out.to_path_buf(),
            len,
            sha256,
            sw_description: description,
            images: self
                .images
                .iter()
                .zip(sums)
                .map(|(image, sums)| BuiltImage {
                    filename: image.filename.clone(),
                    target: image.handler.target().to_path_buf(),
                    len: sums.len,
                    sha256: sums.sha256,
                })
                .collect(),
        })
    }

    /// The generated `sw-description`, given each image's sums.
    fn render(&self, sums: &[ImageSums]) -> String {
        let mut s = String::from("software =\n{\n");
        s += &format!("\tversion = {};\n", quote(&self.version));
        let hw: Vec<String> = self
            .hardware_compatibility
            .iter()
            .map(|h| quote(h))
            .collect();
        s += &format!("\thardware-compatibility = [ {} ];\n", hw.join(", "));
        s += "\timages: (\n";
        for (i, (image, sums)) in self.images.iter().zip(sums).enumerate() {
            s += "\t\t{\n";
            s += &format!("\t\t\tfilename = {};\n", quote(&image.filename));
            match &image.handler {
                Handler::Raw { device } => {
                    s += "\t\t\ttype = \"raw\";\n";
                    s += &format!("\t\t\tdevice = {};\n", quote(&device.to_string_lossy()));
                }
                Handler::RawFile { path } => {
                    s += "\t\t\ttype = \"rawfile\";\n";
                    s += &format!("\t\t\tpath = {};\n", quote(&path.to_string_lossy()));
                }
            }
            match &image.sha256 {
                Sha256Attr::Computed => s += &format!("\t\t\tsha256 = \"{}\";\n", sums.sha256),
                Sha256Attr::Override(h) => s += &format!("\t\t\tsha256 = {};\n", quote(h)),
                Sha256Attr::Omitted => {}
            }
            for attr in &image.attributes {
                s += &format!("\t\t\t{attr}\n");
            }
            s += if i + 1 < self.images.len() {
                "\t\t},\n"
            } else {
                "\t\t}\n"
            };
        }
        s += "\t);\n";
        for extra in &self.extra {
            s += &format!("\t{extra}\n");
        }
        s += "}\n";
        s
    }
}

/// Length, cpio checksum and sha256 of an image, from one pass over it.
struct ImageSums {
    len: u64,
    checksum: u32,
    sha256: String,
}

impl ImageSums {
    fn compute(image: &Image) -> anyhow::Result<Self> {
        match &image.data {
            ImageData::Bytes(data) => Ok(Self {
                len: data.len() as u64,
                checksum: Checksum::of(data),
                sha256: hex::encode(Sha256::digest(data)),
            }),
            ImageData::File(path) => {
                let file =
                    File::open(path).with_context(|| format!("opening {}", path.display()))?;
                let mut hasher = Sha256::new();
                let mut checksum = Checksum::new();
                let len = for_each_chunk(file, |chunk| {
                    hasher.update(chunk);
                    checksum.update(chunk);
                })
                .with_context(|| format!("reading {}", path.display()))?;
                Ok(Self {
                    len,
                    checksum: checksum.value(),
                    sha256: hex::encode(hasher.finalize()),
                })
            }
        }
    }
}

/// A writer that hashes everything written through it.
struct HashingWriter<W: Write> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> HashingWriter<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            written: 0,
        }
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A libconfig string literal.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// sha256 (hex) of the file at `path`, streamed.
pub fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    for_each_chunk(file, |chunk| hasher.update(chunk))
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(hex::encode(hasher.finalize()))
}

/// Feeds `reader` to `f` in chunks of up to 1 MiB; returns the total length.
fn for_each_chunk(mut reader: impl Read, mut f: impl FnMut(&[u8])) -> io::Result<u64> {
    let mut buf = vec![0u8; BUF];
    let mut len = 0u64;
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return Ok(len),
            Ok(n) => {
                f(&buf[..n]);
                len += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// sha256 (hex) of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// `len` pseudo-random, incompressible bytes, the same for the same `seed`.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = SplitMix64(seed);
    let mut out = vec![0u8; len];
    rng.fill(&mut out);
    out
}

/// Writes `len` pseudo-random, incompressible bytes (the same for the same
/// `seed`) to a new file at `path`, 1 MiB at a time.
///
/// A fast generator (SplitMix64) instead of `/dev/urandom` keeps a 100 MiB
/// image at well under a second and makes failures reproducible.
pub fn write_random_file(path: &Path, len: u64, seed: u64) -> anyhow::Result<()> {
    let mut rng = SplitMix64(seed);
    let mut file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut buf = vec![0u8; BUF];
    let mut left = len;
    while left > 0 {
        let n = left.min(BUF as u64) as usize;
        rng.fill(&mut buf[..n]);
        file.write_all(&buf[..n])
            .with_context(|| format!("writing {}", path.display()))?;
        left -= n as u64;
    }
    file.flush()?;
    Ok(())
}

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, good enough to make
/// data that no compressor or dedup shortcut can exploit.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for chunk in &mut chunks {
            chunk.copy_from_slice(&self.next().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let last = self.next().to_le_bytes();
        let n = rest.len();
        rest.copy_from_slice(&last[..n]);
    }
}

/// Fails unless the file at `path` has the sha256 `expected_sha256` (hex).
pub fn ensure_file_sha256(path: &Path, expected_sha256: &str) -> anyhow::Result<()> {
    let got = sha256_file(path)?;
    ensure!(
        got == expected_sha256,
        "{} has sha256 {got}, expected {expected_sha256}",
        path.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_is_deterministic_and_sized() {
        assert_eq!(random_bytes(13, 1), random_bytes(13, 1));
        assert_ne!(random_bytes(13, 1), random_bytes(13, 2));
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("r");
        write_random_file(&p, (BUF as u64) + 5, 7).expect("write");
        let data = fs::read(&p).expect("read");
        assert_eq!(data.len(), BUF + 5);
        assert_eq!(&data[..100], &random_bytes(100, 7)[..]);
        assert_eq!(sha256_file(&p).expect("sha"), sha256_hex(&data));
    }

    #[test]
    fn quotes_libconfig() {
        assert_eq!(quote(r#"a"b\c"#), r#""a\"b\\c""#);
    }

    #[test]
    fn renders_description() {
        let b = SwuBuilder::new()
            .version("2.0")
            .hardware_compatibility(["1.0", "1.1"])
            .image(Image::raw("a.bin", vec![1u8], "/x/a").attribute("installed-directly = true;"))
            .image(Image::rawfile("b.bin", vec![2u8], "/x/b").sha256_override("00"))
            .image(Image::rawfile("c.bin", vec![3u8], "/x/c").without_sha256())
            .extra("description = \"d\";");
        let sums: Vec<ImageSums> = b
            .images
            .iter()
            .map(|i| ImageSums::compute(i).expect("sums"))
            .collect();
        let text = b.render(&sums);
        assert!(text.contains("version = \"2.0\";"));
        assert!(text.contains("hardware-compatibility = [ \"1.0\", \"1.1\" ];"));
        assert!(text.contains(&format!("sha256 = \"{}\";", sha256_hex(&[1]))));
        assert!(text.contains("sha256 = \"00\";"));
        assert_eq!(text.matches("sha256").count(), 2);
        assert!(text.contains("installed-directly = true;"));
        assert!(text.contains("device = \"/x/a\";"));
        assert!(text.contains("path = \"/x/b\";"));
        assert!(text.contains("description = \"d\";"));
    }

    #[test]
    fn builds_archive_with_expected_members() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cert = TestCert::generate(dir.path()).expect("cert");
        let big = dir.path().join("big.img");
        write_random_file(&big, 3 * BUF as u64 + 1, 3).expect("random file");
        let target = dir.path().join("target.img");
        let built = SwuBuilder::new()
            .image(Image::raw("big.img", big.as_path(), &target))
            .image(Image::rawfile(
                "small",
                b"hi".as_slice(),
                dir.path().join("f"),
            ))
            .build(&cert, &dir.path().join("u.swu"))
            .expect("build");
        assert!(target.is_file(), "raw target created");
        assert_eq!(built.len, fs::metadata(&built.path).expect("stat").len());
        assert_eq!(built.len % 512, 0);
        assert_eq!(built.sha256, sha256_file(&built.path).expect("sha"));
        assert_eq!(built.images[0].len, 3 * BUF as u64 + 1);
        assert_eq!(built.images[0].sha256, sha256_file(&big).expect("sha"));
        let list = std::process::Command::new("cpio")
            .args(["-t", "-H", "crc"])
            .stdin(File::open(&built.path).expect("open swu"))
            .output()
            .expect("cpio -t");
        assert_eq!(
            String::from_utf8_lossy(&list.stdout),
            "sw-description\nsw-description.sig\nbig.img\nsmall\n"
        );
    }
}
