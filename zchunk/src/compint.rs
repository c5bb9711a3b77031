//! zchunk's compact unsigned integers: little-endian groups of 7 bits, the
//! last byte marked by its top bit (the opposite of LEB128's convention).

use crate::error::Error;

/// The most bytes a 64-bit value takes (ceil(64 / 7)).
pub const MAX_LEN: usize = 10;

/// Reads one integer at `*pos` in `buf` and advances `*pos`.
///
/// Rejects an integer that runs past `buf`, is longer than [`MAX_LEN`] bytes or
/// does not fit in 64 bits; `what` names the field in the error.
pub fn read(buf: &[u8], pos: &mut usize, what: &'static str) -> Result<u64, Error> {
    let mut value: u64 = 0;
    for i in 0..MAX_LEN {
        let Some(&byte) = buf.get(pos.saturating_add(i)) else {
            return Err(Error::Truncated {
                what,
                needed: (pos.saturating_add(i) + 1) as u64,
                available: buf.len() as u64,
            });
        };
        let group = u64::from(byte & 0x7f);
        let shift = 7 * i as u32;
        // The tenth byte may only carry the 64th bit.
        if shift == 63 && group > 1 {
            return Err(Error::BadInteger { what });
        }
        value |= group << shift;
        if byte & 0x80 != 0 {
            *pos += i + 1;
            return Ok(value);
        }
    }
    Err(Error::BadInteger { what })
}

/// Appends `value` in compact form (for building headers in tests and tools).
pub fn write(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let group = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(group | 0x80);
            return;
        }
        out.push(group);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(v: u64) {
        let mut b = Vec::new();
        write(&mut b, v);
        let mut pos = 0;
        assert_eq!(read(&b, &mut pos, "test").unwrap(), v);
        assert_eq!(pos, b.len());
    }

    #[test]
    fn round_trips_edges() {
        for v in [
            0,
            1,
            127,
            128,
            16383,
            16384,
            u32::MAX as u64,
            1 << 32,
            5 << 30,
            u64::MAX,
        ] {
            round_trip(v);
        }
    }

    #[test]
    fn known_encodings() {
        // 0x80 is 0; "23 b6" is 35 + 54 * 128 (an index size seen in a zck file).
        let mut pos = 0;
        assert_eq!(read(&[0x80], &mut pos, "t").unwrap(), 0);
        let mut pos = 0;
        assert_eq!(read(&[0x23, 0xb6], &mut pos, "t").unwrap(), 35 + 54 * 128);
        let mut b = Vec::new();
        write(&mut b, 300);
        assert_eq!(b, [(300 % 128) as u8, 0x80 | 2]);
    }

    #[test]
    fn rejects_unterminated_and_overlong() {
        let mut pos = 0;
        assert!(matches!(
            read(&[0x01, 0x02], &mut pos, "t"),
            Err(Error::Truncated { .. })
        ));
        assert_eq!(pos, 0);
        let mut pos = 0;
        assert!(matches!(
            read(&[0; 11], &mut pos, "t"),
            Err(Error::BadInteger { .. })
        ));
        // 2^64 does not fit.
        let mut over = vec![0u8; 9];
        over.push(0x82);
        let mut pos = 0;
        assert!(matches!(
            read(&over, &mut pos, "t"),
            Err(Error::BadInteger { .. })
        ));
    }
}
