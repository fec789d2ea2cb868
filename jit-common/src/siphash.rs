//! SipHash-2-4, the keyed hash that binds an approved `execve` to the arguments and environment
//! the reviewer was shown (see `pending::ArgsBinding`).
//!
//! The daemon hashes the strings it read from the held process and shows; the kernel hashes
//! the strings it copied for the restarted `execve`, with the same secret key (the `BIND_KEY`
//! map, which agents cannot read: they are refused `bpf()`). A keyed pseudo-random function is
//! what makes this a binding: without the key an agent cannot construct a second argument list
//! with the same digest as the one a reviewer approved, as it could for any unkeyed 64-bit hash.
//!
//! The state works a word at a time so the eBPF side can feed it from a `bpf_loop` callback:
//! [`Sip::new`], then [`Sip::word`] for every whole little-endian 8-byte word, then
//! [`Sip::finish`] with the last 0–7 bytes (zero-padded, little-endian) and the total length.
#![expect(
    clippy::inline_always,
    reason = "the eBPF programs call these: inlined, they avoid BPF-to-BPF calls"
)]

/// The running state of one SipHash-2-4 computation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Sip {
    pub v: [u64; 4],
}

impl Sip {
    /// A new computation under `key` (two little-endian 64-bit halves).
    #[must_use]
    #[inline(always)]
    pub const fn new(key: [u64; 2]) -> Self {
        Self {
            v: [
                key[0] ^ 0x736f_6d65_7073_6575,
                key[1] ^ 0x646f_7261_6e64_6f6d,
                key[0] ^ 0x6c79_6765_6e65_7261,
                key[1] ^ 0x7465_6462_7974_6573,
            ],
        }
    }

    #[inline(always)]
    fn round(&mut self) {
        let [mut v0, mut v1, mut v2, mut v3] = self.v;
        v0 = v0.wrapping_add(v1);
        v1 = v1.rotate_left(13);
        v1 ^= v0;
        v0 = v0.rotate_left(32);
        v2 = v2.wrapping_add(v3);
        v3 = v3.rotate_left(16);
        v3 ^= v2;
        v0 = v0.wrapping_add(v3);
        v3 = v3.rotate_left(21);
        v3 ^= v0;
        v2 = v2.wrapping_add(v1);
        v1 = v1.rotate_left(17);
        v1 ^= v2;
        v2 = v2.rotate_left(32);
        self.v = [v0, v1, v2, v3];
    }

    /// Absorbs one whole 8-byte word `m` (the bytes read little-endian).
    #[inline(always)]
    pub fn word(&mut self, m: u64) {
        self.v[3] ^= m;
        self.round();
        self.round();
        self.v[0] ^= m;
    }

    /// The digest, given the last `len % 8` bytes as a zero-padded little-endian word and the
    /// total length `len` in bytes.
    #[must_use]
    #[inline(always)]
    pub fn finish(mut self, rest: u64, len: u64) -> u64 {
        self.word(rest | (len << 56));
        self.v[2] ^= 0xff;
        self.round();
        self.round();
        self.round();
        self.round();
        self.v[0] ^ self.v[1] ^ self.v[2] ^ self.v[3]
    }
}

/// The SipHash-2-4 digest of `bytes` under `key`.
#[must_use]
pub fn digest(key: [u64; 2], bytes: &[u8]) -> u64 {
    let mut sip = Sip::new(key);
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        sip.word(u64::from_le_bytes(b));
    }
    let mut last = [0u8; 8];
    let rest = words.remainder();
    last[..rest.len()].copy_from_slice(rest);
    sip.finish(u64::from_le_bytes(last), bytes.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Key `00 01 .. 0f`, as in the reference implementation's test vectors.
    const KEY: [u64; 2] = [0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908];

    #[test]
    fn matches_the_reference_vectors() {
        // From the SipHash paper (Aumasson, Bernstein), appendix A: message 00 01 .. 0e.
        let msg: std::vec::Vec<u8> = (0u8..15).collect();
        assert_eq!(digest(KEY, &msg), 0xa129_ca61_49be_45e5);
        // First entries of the reference implementation's vector table (vectors.h).
        assert_eq!(digest(KEY, &[]), 0x726f_db47_dd0e_0e31);
        assert_eq!(digest(KEY, &[0]), 0x74f8_39c5_93dc_67fd);
        let eight: std::vec::Vec<u8> = (0u8..8).collect();
        assert_eq!(digest(KEY, &eight), 0x93f5_f579_9a93_2462);
    }

    #[test]
    fn depends_on_key_length_and_every_byte() {
        let a = digest(KEY, b"git\0push\0");
        assert_ne!(a, digest(KEY, b"git\0push\0\0"));
        assert_ne!(a, digest(KEY, b"git\0pusH\0"));
        assert_ne!(a, digest([1, 2], b"git\0push\0"));
    }
}
