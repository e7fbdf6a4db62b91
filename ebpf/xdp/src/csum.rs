//! Internet checksums (RFC 1071) and their incremental update (RFC 1624), on 16-bit words
//! taken in memory order: the arithmetic is byte-order independent as long as every word is.

/// Folds a 64-bit sum of 16- or 32-bit words to 16 bits (one's complement addition).
#[inline(always)]
pub fn fold(mut sum: u64) -> u16 {
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// Sum of the 16-bit words of `bytes` (memory order); `bytes.len()` must be even.
#[inline(always)]
pub fn sum_words<const N: usize>(bytes: &[u8; N]) -> u64 {
    let mut sum = 0u64;
    let mut i = 0;
    while i + 1 < N {
        sum += u64::from(u16::from_ne_bytes([bytes[i], bytes[i + 1]]));
        i += 2;
    }
    sum
}

/// RFC 1624 eqn. 3: the new checksum, given the old one and a precomputed
/// `sum(!old words) + sum(new words)`.
#[inline(always)]
pub fn update(old_csum: u16, delta: u64) -> u16 {
    !fold(u64::from(!old_csum) + delta)
}

/// A 32-bit word (memory order) as a term of a sum [`fold`] folds: added whole, not as its
/// two 16-bit halves, because 2^16 is 1 modulo 2^16 - 1 (the word and the sum of its halves
/// fold to the same checksum).
#[inline(always)]
pub fn add32(w: u32) -> u64 {
    u64::from(w)
}

/// The complement of a 32-bit word (both its 16-bit halves complemented), as [`add32`].
#[inline(always)]
pub fn not32(w: u32) -> u64 {
    add32(!w)
}

/// A 64-bit word (memory order) as two [`add32`] terms.
#[inline(always)]
pub fn add64(w: u64) -> u64 {
    add32(w as u32) + add32((w >> 32) as u32)
}
