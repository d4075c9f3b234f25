//! G.711 μ-law: 8-bit companded samples to and from 16-bit linear PCM.
//!
//! Bit-exact with the ITU-T reference implementation of G.711 (the G.191 Software
//! Tool Library, `ulaw_compress` / `ulaw_expand`):
//!
//! - **Decoding** is a 256-entry table computed at compile time from the G.711
//!   formula; the values are those of G.711 Table 2b scaled to 16 bits (±32124 at
//!   the ends, 0 for both zero codes `0xFF` and `0x7F`).
//! - **Encoding** drops the two low bits (μ-law works on 14-bit samples), takes the
//!   one's complement of negative samples, adds the bias 33, clips to 13 bits and
//!   finds the segment, exactly as the reference does. Because the result depends
//!   only on `x >> 2`, it is served from a 16 Ki-entry table (16 KiB, built at compile
//!   time), which measured faster than the bias/segment arithmetic (see
//!   `BENCHMARKS.md`); [`encode_sample_arith`] is the arithmetic form, kept as the
//!   reference the table is checked against.
//!
//! A note for anyone comparing with `sox`: sox first *rounds* the 16-bit sample to
//! 14 bits and treats negative samples as sign and magnitude (the classic Sun
//! `g711.c`), where the ITU reference *truncates* and uses the one's complement. The
//! two agree everywhere except within a few 16-bit steps of a decision threshold,
//! where they pick neighbouring levels (510 of the 65536 inputs, about 2 % of
//! the samples of speech-level audio); decoding is identical. The sox tests in
//! `tests/it/audio_sox.rs` pin both facts down.

/// μ-law code for silence (positive zero).
pub const SILENCE: u8 = 0xFF;

/// Decodes one μ-law byte.
#[inline]
pub fn decode_sample(code: u8) -> i16 {
    DECODE_TABLE[code as usize]
}

/// Encodes one 16-bit sample (table lookup).
#[inline]
pub fn encode_sample(sample: i16) -> u8 {
    // The code depends only on the top 14 bits; `as u16 >> 2` indexes them.
    ENCODE_TABLE[(sample as u16 >> 2) as usize]
}

/// Encodes one sample with the reference bias/segment arithmetic (same result as
/// [`encode_sample`]).
#[inline]
pub const fn encode_sample_arith(sample: i16) -> u8 {
    let x = sample as i32;
    // 14-bit magnitude (one's complement for negatives) plus the μ-law bias.
    let mut abs = if x < 0 { (!x >> 2) + 33 } else { (x >> 2) + 33 };
    if abs > 0x1FFF {
        abs = 0x1FFF;
    }
    // Segment 1..=8: one more than the bit length of abs >> 6.
    let segment = 1 + (32 - ((abs >> 6) as u32).leading_zeros()) as i32;
    let high = 8 - segment;
    let low = 0xF - ((abs >> segment) & 0xF);
    let code = ((high << 4) | low) as u8;
    if x >= 0 { code | 0x80 } else { code }
}

/// The reference expansion formula for one code (used to build [`DECODE_TABLE`]).
const fn decode_formula(code: u8) -> i16 {
    let inverted = !code;
    let exponent = ((inverted >> 4) & 0x7) as i32;
    let mantissa = (inverted & 0xF) as i32;
    let step = 4 << (exponent + 1);
    let magnitude = (0x80 << exponent) + step * mantissa + step / 2 - 4 * 33;
    if code < 0x80 {
        -magnitude as i16
    } else {
        magnitude as i16
    }
}

/// Linear value of every μ-law code.
pub static DECODE_TABLE: [i16; 256] = {
    let mut table = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = decode_formula(i as u8);
        i += 1;
    }
    table
};

/// μ-law code for every 14-bit sample (`(x as u16) >> 2`).
static ENCODE_TABLE: [u8; 1 << 14] = {
    let mut table = [0u8; 1 << 14];
    let mut i = 0;
    while i < (1 << 14) {
        // Index i holds the top 14 bits; rebuild a 16-bit sample with them.
        table[i] = encode_sample_arith(((i as u16) << 2) as i16);
        i += 1;
    }
    table
};

/// Decodes μ-law bytes, appending 16-bit samples to `out`.
pub fn decode_into(codes: &[u8], out: &mut Vec<i16>) {
    out.extend(codes.iter().map(|&c| decode_sample(c)));
}

/// Encodes 16-bit samples, appending μ-law bytes to `out`.
pub fn encode_into(samples: &[i16], out: &mut Vec<u8>) {
    out.extend(samples.iter().map(|&s| encode_sample(s)));
}

/// Decodes μ-law bytes into a new buffer.
pub fn decode(codes: &[u8]) -> Vec<i16> {
    let mut out = Vec::with_capacity(codes.len());
    decode_into(codes, &mut out);
    out
}

/// Encodes 16-bit samples into a new buffer.
pub fn encode(samples: &[i16]) -> Vec<u8> {
    let mut out = Vec::with_capacity(samples.len());
    encode_into(samples, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// G.711 Table 2b decoder outputs (one polarity, 14-bit units), rebuilt from the
    /// segment layout the standard lists rather than from the expansion formula:
    /// segment 0 outputs 0, 2, ..., 30; segment s > 0 starts at the decision value
    /// 31, 95, 223, ..., 4063 and has 16 intervals of 4, 8, ..., 256 units, whose
    /// midpoints are the outputs (the last one is 8031).
    fn table_2b_magnitude(code: u8) -> i32 {
        let seg_start = [0, 31, 95, 223, 479, 991, 2015, 4063];
        let inverted = !code & 0x7F;
        let s = (inverted >> 4) as usize;
        let q = (inverted & 0xF) as i32;
        if s == 0 {
            return 2 * q;
        }
        let step = 2 << s;
        seg_start[s] + step * q + step / 2
    }

    #[test]
    fn decodes_all_256_codes_like_the_g711_tables() {
        for code in 0..=255u8 {
            let expected14 = table_2b_magnitude(code);
            let magnitude = (decode_sample(code) as i32).abs();
            // Table values are in 14-bit units; the decoder output is left-justified.
            assert_eq!(magnitude, expected14 * 4, "code {code:#04x}");
            assert_eq!(decode_sample(code) < 0, code < 0x80 && magnitude != 0);
        }
        assert_eq!(decode_sample(0xFF), 0);
        assert_eq!(decode_sample(0x7F), 0);
        assert_eq!(decode_sample(0x80), 32124);
        assert_eq!(decode_sample(0x00), -32124);
        assert_eq!(decode_sample(0xFE), 8);
        assert_eq!(decode_sample(0xEF), 33 * 4);
        assert_eq!(decode_sample(0x70), -30 * 4);
        assert_eq!(table_2b_magnitude(0x80), 8031);
    }

    #[test]
    fn table_encoder_equals_the_reference_arithmetic_for_every_sample() {
        for x in i16::MIN..=i16::MAX {
            assert_eq!(encode_sample(x), encode_sample_arith(x), "sample {x}");
        }
    }

    #[test]
    fn encoder_is_monotonic_and_round_trips() {
        // decode(encode(x)) never decreases as x grows, stays within half a step of
        // the 14-bit input, and every code except negative zero survives a round trip.
        let mut previous = i32::MIN;
        for x in i16::MIN..=i16::MAX {
            let y = decode_sample(encode_sample(x)) as i32;
            assert!(y >= previous, "not monotonic at {x}");
            previous = y;
            let code = encode_sample(x);
            let exponent = (!code >> 4) & 7;
            // Half the segment's step in 16-bit units, plus the dropped low bits.
            let half_step = 4 << exponent;
            if (-32124..=32124).contains(&(x as i32)) {
                assert!((y - x as i32).abs() <= half_step + 4, "x {x} -> {y}");
            }
        }
        for code in 0..=255u8 {
            let back = encode_sample(decode_sample(code));
            if code == 0x7F {
                assert_eq!(
                    back, 0xFF,
                    "negative zero decodes to 0, which encodes as +0"
                );
            } else {
                assert_eq!(back, code, "code {code:#04x}");
            }
        }
    }

    #[test]
    fn buffers() {
        let pcm = [0i16, 1000, -1000, i16::MAX, i16::MIN];
        let codes = encode(&pcm);
        assert_eq!(codes, [0xFF, 0xCE, 0x4E, 0x80, 0x00]);
        let mut out = vec![7];
        decode_into(&codes, &mut out);
        assert_eq!(out, [7, 0, 988, -988, 32124, -32124]);
    }
}
