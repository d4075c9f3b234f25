//! PCM16 sample-rate conversion (8, 16 and 24 kHz, and other rational ratios) with
//! a windowed-sinc polyphase FIR filter and a streaming API.
//!
//! A ratio `to / from` is reduced to `L / M`; conceptually the input is upsampled by
//! `L` (zeros inserted), low-pass filtered at the filter rate `from * L`, and every
//! `M`-th sample kept. The polyphase form only computes the samples that are kept,
//! so each output sample costs one dot product of `K` taps (`K` = taps per phase, a
//! multiple of 8 so the loop vectorises).
//!
//! **Filter.** Kaiser-windowed sinc designed for 80 dB with the passband edge at
//! 85 % and the stopband edge at 100 % of the lower rate's Nyquist frequency (for
//! 8 kHz: flat to 3.4 kHz, rejecting from 4 kHz, which covers the telephone band).
//! Measured on the designed filters (the unit test `filter_figures` and the
//! benchmark print them), for every pair of 8, 16 and 24 kHz: passband ripple at
//! most ±0.001 dB up to 85 % of Nyquist, stopband attenuation at least 79.6 dB from
//! Nyquist up; 72 to 208 taps per output sample. Images when upsampling and aliases
//! when downsampling stay ~80 dB below the signal, under the μ-law noise floor
//! (end-to-end tone tests below check ≥ 75 dB after rounding to 16 bits).
//!
//! **Streaming.** [`Resampler::process`] takes any number of input samples (for
//! example one 20 ms frame at a time) and appends every output sample it can
//! already compute; the filter history carries over, so there are no clicks at
//! frame boundaries and the output is identical whatever the chunking.
//! The output is time-aligned with the input (the filter delay is compensated):
//! output sample `n` is the input at time `n / to_hz`. The price is a fixed
//! look-ahead of [`Resampler::latency`] (2.1 to 4.5 ms for the 8/16/24 kHz pairs):
//! [`Resampler::flush`] pushes out the samples still held back at the end of a
//! stream, after which the total output length is `ceil(input_len * L / M)`.

use std::time::Duration;

/// Why a resampler could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResampleError {
    #[error("sample rate must be positive")]
    ZeroRate,
    #[error("ratio {from} Hz -> {to} Hz reduces to {up}/{down}, too fine for a polyphase filter")]
    RatioTooFine {
        from: u32,
        to: u32,
        up: u32,
        down: u32,
    },
}

/// Largest upsampling factor `L` accepted (bounds the filter's memory).
const MAX_UP: u32 = 1024;
/// Design stopband attenuation in dB.
const ATTENUATION_DB: f64 = 80.0;
/// Passband edge as a fraction of the lower rate's Nyquist frequency.
const PASS_FRACTION: f64 = 0.85;

/// A streaming sample-rate converter for mono PCM16.
#[derive(Debug, Clone)]
pub struct Resampler {
    from_hz: u32,
    to_hz: u32,
    up: usize,
    down: usize,
    /// Taps per phase (multiple of 8).
    taps: usize,
    /// Phase `r` occupies `phases[r * taps..(r + 1) * taps]`, ordered oldest input
    /// first so it multiplies a contiguous window of `buf`.
    phases: Vec<f32>,
    /// `taps - 1` samples of history followed by input not yet consumed.
    buf: Vec<f32>,
    /// Position of the next output in upsampled units, relative to `buf[0]`.
    pos: usize,
    /// Where `pos` starts after a reset (history plus the filter's delay).
    start_pos: usize,
    /// Input and output sample counts since the last reset, for [`Self::flush`].
    consumed: u64,
    produced: u64,
    /// Prototype filter (at the filter rate), kept for [`Self::response`].
    prototype: Vec<f64>,
}

impl Resampler {
    /// A converter from `from_hz` to `to_hz`.
    pub fn new(from_hz: u32, to_hz: u32) -> Result<Self, ResampleError> {
        if from_hz == 0 || to_hz == 0 {
            return Err(ResampleError::ZeroRate);
        }
        let g = gcd(from_hz, to_hz);
        let (up, down) = (to_hz / g, from_hz / g);
        if up > MAX_UP {
            return Err(ResampleError::RatioTooFine {
                from: from_hz,
                to: to_hz,
                up,
                down,
            });
        }
        let (up, down) = (up as usize, down as usize);
        let (taps, prototype) = if up == down {
            (1, vec![1.0])
        } else {
            design(from_hz, to_hz, up)
        };
        let mut phases = vec![0f32; up * taps];
        for r in 0..up {
            for j in 0..taps {
                // Window element j (oldest first) meets input x[q - (taps-1-j)],
                // which sits at filter index r + up * (taps - 1 - j).
                let k = r + up * (taps - 1 - j);
                phases[r * taps + j] = (prototype[k] * up as f64) as f32;
            }
        }
        // Delay of the linear-phase prototype, in upsampled units.
        let delay = (prototype.len() - 1) / 2;
        let start_pos = (taps - 1) * up + delay;
        let mut resampler = Self {
            from_hz,
            to_hz,
            up,
            down,
            taps,
            phases,
            buf: Vec::new(),
            pos: start_pos,
            start_pos,
            consumed: 0,
            produced: 0,
            prototype,
        };
        resampler.reset();
        Ok(resampler)
    }

    /// Input rate in Hz.
    pub fn from_hz(&self) -> u32 {
        self.from_hz
    }

    /// Output rate in Hz.
    pub fn to_hz(&self) -> u32 {
        self.to_hz
    }

    /// Filter taps used per output sample.
    pub fn taps_per_output(&self) -> usize {
        self.taps
    }

    /// How far the output lags the input while streaming (the filter's look-ahead).
    pub fn latency(&self) -> Duration {
        let ahead_up = self.start_pos - (self.taps - 1) * self.up;
        Duration::from_secs_f64(ahead_up as f64 / (self.up as f64 * self.from_hz as f64))
    }

    /// Forgets all history and held-back samples (for example after a barge-in).
    pub fn reset(&mut self) {
        self.buf.clear();
        self.buf.resize(self.taps - 1, 0.0);
        self.pos = self.start_pos;
        self.consumed = 0;
        self.produced = 0;
    }

    /// Feeds input samples and appends every output sample now computable.
    pub fn process(&mut self, input: &[i16], out: &mut Vec<i16>) {
        if self.up == self.down {
            out.extend_from_slice(input);
            self.consumed += input.len() as u64;
            self.produced += input.len() as u64;
            return;
        }
        self.buf.extend(input.iter().map(|&s| s as f32));
        self.consumed += input.len() as u64;
        self.run(out, u64::MAX);
    }

    /// Ends the stream: appends the held-back tail, so that the whole output has
    /// `ceil(input_len * to / from)` samples, then resets.
    pub fn flush(&mut self, out: &mut Vec<i16>) {
        let target = (self.consumed * self.up as u64).div_ceil(self.down as u64);
        if self.up != self.down {
            // Zeros after the end let the filter finish the last real samples.
            while self.produced < target {
                let missing = (target - self.produced) as usize;
                let zeros = (missing * self.down).div_ceil(self.up) + self.taps;
                self.buf.resize(self.buf.len() + zeros, 0.0);
                self.run(out, target);
            }
        }
        self.reset();
    }

    /// Computes outputs while input is available (and fewer than `limit` produced).
    fn run(&mut self, out: &mut Vec<i16>, limit: u64) {
        let (up, down, taps) = (self.up, self.down, self.taps);
        let available = self.buf.len();
        let before = out.len();
        let mut budget = limit.saturating_sub(self.produced);
        // Track pos as (q, r) = (pos / up, pos % up) without dividing per sample.
        let (step_q, step_r) = (down / up, down % up);
        let (mut q, mut r) = (self.pos / up, self.pos % up);
        while q < available && budget > 0 {
            let window = &self.buf[q + 1 - taps..=q];
            let coeffs = &self.phases[r * taps..(r + 1) * taps];
            let y = dot(window, coeffs);
            // Round half away from zero; `as` saturates, which clips overshoot.
            out.push((y + 0.5f32.copysign(y)) as i16);
            q += step_q;
            r += step_r;
            if r >= up {
                r -= up;
                q += 1;
            }
            budget -= 1;
        }
        let pos = q * up + r;
        self.produced += (out.len() - before) as u64;
        // Keep the history the next output needs; drop the rest.
        let keep_from = (pos / up + 1 - taps).min(available);
        self.buf.drain(..keep_from);
        self.pos = pos - keep_from * up;
    }

    /// Gain of the prototype filter at `hz` (relative to DC, linear), for measuring
    /// passband flatness and stopband rejection.
    pub fn response(&self, hz: f64) -> f64 {
        let filter_rate = self.from_hz as f64 * self.up as f64;
        let w = 2.0 * std::f64::consts::PI * hz / filter_rate;
        let (mut re, mut im) = (0.0, 0.0);
        for (n, h) in self.prototype.iter().enumerate() {
            re += h * (w * n as f64).cos();
            im -= h * (w * n as f64).sin();
        }
        (re * re + im * im).sqrt()
    }

    /// Measured figures of this converter's filter: (passband ripple in dB up to
    /// 85 % of the lower Nyquist frequency, minimum stopband attenuation in dB from
    /// that Nyquist frequency to half the filter rate).
    pub fn filter_figures(&self) -> (f64, f64) {
        if self.up == self.down {
            return (0.0, f64::INFINITY);
        }
        let nyquist = self.from_hz.min(self.to_hz) as f64 / 2.0;
        let filter_half = self.from_hz as f64 * self.up as f64 / 2.0;
        let mut ripple: f64 = 0.0;
        let steps = 400;
        for i in 0..=steps {
            let f = nyquist * PASS_FRACTION * i as f64 / steps as f64;
            ripple = ripple.max((20.0 * self.response(f).log10()).abs());
        }
        let mut worst: f64 = 0.0;
        let steps = 4000;
        for i in 0..=steps {
            let f = nyquist + (filter_half - nyquist) * i as f64 / steps as f64;
            worst = worst.max(self.response(f));
        }
        (ripple, -20.0 * worst.log10())
    }
}

/// Converts a whole buffer (a convenience over [`Resampler`]).
pub fn resample(input: &[i16], from_hz: u32, to_hz: u32) -> Result<Vec<i16>, ResampleError> {
    let mut resampler = Resampler::new(from_hz, to_hz)?;
    let mut out = Vec::with_capacity(input.len() * to_hz as usize / from_hz as usize + 1);
    resampler.process(input, &mut out);
    resampler.flush(&mut out);
    Ok(out)
}

/// Designs the prototype low-pass filter; returns (taps per phase, filter) where
/// the filter has `taps * up` coefficients, an odd-length symmetric part and a
/// trailing zero.
fn design(from_hz: u32, to_hz: u32, up: usize) -> (usize, Vec<f64>) {
    let filter_rate = from_hz as f64 * up as f64;
    let nyquist = from_hz.min(to_hz) as f64 / 2.0;
    let pass = nyquist * PASS_FRACTION;
    let transition = (nyquist - pass) / filter_rate;
    // Kaiser's length estimate for the attenuation and transition width.
    let length = (ATTENUATION_DB - 8.0) / (2.285 * 2.0 * std::f64::consts::PI * transition) + 1.0;
    let taps = (length / up as f64).ceil() as usize;
    let taps = taps.div_ceil(8).max(1) * 8;
    let total = taps * up;
    // An odd symmetric length keeps the delay a whole number of filter samples.
    let n = total - 1;
    let center = (n - 1) as f64 / 2.0;
    let cutoff = (pass + nyquist) / 2.0 / filter_rate; // cycles per filter sample
    let beta = 0.1102 * (ATTENUATION_DB - 8.7);
    let i0_beta = bessel_i0(beta);
    let mut h: Vec<f64> = (0..n)
        .map(|i| {
            let t = i as f64 - center;
            let sinc = if t == 0.0 {
                2.0 * cutoff
            } else {
                (2.0 * std::f64::consts::PI * cutoff * t).sin() / (std::f64::consts::PI * t)
            };
            let ratio = t / center;
            let window = bessel_i0(beta * (1.0 - ratio * ratio).max(0.0).sqrt()) / i0_beta;
            sinc * window
        })
        .collect();
    let sum: f64 = h.iter().sum();
    for c in &mut h {
        *c /= sum;
    }
    h.push(0.0);
    (taps, h)
}

/// Modified Bessel function of the first kind, order 0 (power series).
fn bessel_i0(x: f64) -> f64 {
    let mut sum = 1.0;
    let mut term = 1.0;
    let half = x / 2.0;
    for k in 1..64 {
        term *= (half / k as f64) * (half / k as f64);
        sum += term;
        if term < sum * 1e-17 {
            break;
        }
    }
    sum
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Dot product of equal-length slices whose length is a multiple of 8. Sixteen
/// independent accumulators (four SSE registers) let the compiler vectorise and
/// keep several additions in flight instead of waiting on one chain.
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let (a16, b16) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ra, rb) = (a16.remainder(), b16.remainder());
    for (x, y) in a16.zip(b16) {
        for i in 0..16 {
            acc[i] += x[i] * y[i];
        }
    }
    for (x, y) in ra.chunks_exact(8).zip(rb.chunks_exact(8)) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut half = [0f32; 8];
    for i in 0..8 {
        half[i] = acc[i] + acc[i + 8];
    }
    ((half[0] + half[4]) + (half[1] + half[5])) + ((half[2] + half[6]) + (half[3] + half[7]))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATES: [u32; 3] = [8000, 16000, 24000];

    fn sine(rate: u32, hz: f64, amplitude: f64, len: usize) -> Vec<i16> {
        (0..len)
            .map(|n| {
                let t = n as f64 / rate as f64;
                (amplitude * (2.0 * std::f64::consts::PI * hz * t).sin()).round() as i16
            })
            .collect()
    }

    /// Amplitude of the `hz` component of `x`, ignoring `skip` samples at each end;
    /// Hann-windowed so a strong tone elsewhere does not leak into the estimate.
    fn amplitude(x: &[i16], rate: u32, hz: f64, skip: usize) -> f64 {
        let x = &x[skip..x.len() - skip];
        let n = x.len() as f64;
        let (mut s, mut c, mut weights) = (0.0, 0.0, 0.0);
        for (i, &v) in x.iter().enumerate() {
            let hann = 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / n).cos();
            let w = 2.0 * std::f64::consts::PI * hz * i as f64 / rate as f64;
            s += hann * v as f64 * w.sin();
            c += hann * v as f64 * w.cos();
            weights += hann;
        }
        2.0 * (s * s + c * c).sqrt() / weights
    }

    #[test]
    fn filter_figures() {
        for from in RATES {
            for to in RATES {
                let r = Resampler::new(from, to).unwrap();
                let (ripple, stop) = r.filter_figures();
                println!(
                    "{from} -> {to}: {} taps/output, ripple ±{ripple:.4} dB, stopband {stop:.1} dB, latency {:?}",
                    r.taps_per_output(),
                    r.latency()
                );
                assert!(ripple < 0.01, "{from}->{to} ripple {ripple}");
                assert!(stop > 79.0, "{from}->{to} stopband {stop}");
                if from != to {
                    assert!(r.latency() < Duration::from_millis(6));
                }
            }
        }
    }

    #[test]
    fn passband_tones_keep_their_level_and_time() {
        for from in RATES {
            for to in RATES {
                let tone = 1000.0;
                let input = sine(from, tone, 10000.0, from as usize / 5);
                let out = resample(&input, from, to).unwrap();
                assert_eq!(
                    out.len(),
                    (input.len() as u64 * to as u64).div_ceil(from as u64) as usize
                );
                let a = amplitude(&out, to, tone, to as usize / 50);
                assert!((a / 10000.0 - 1.0).abs() < 0.002, "{from}->{to}: {a}");
                // Delay compensated: the output matches the ideal sine at the new rate.
                let ideal = sine(to, tone, 10000.0, out.len());
                let skip = to as usize / 50;
                let worst = out[skip..out.len() - skip]
                    .iter()
                    .zip(&ideal[skip..])
                    .map(|(a, b)| (*a as i32 - *b as i32).abs())
                    .max()
                    .unwrap();
                assert!(worst <= 12, "{from}->{to}: off by {worst}");
            }
        }
    }

    #[test]
    fn downsampling_rejects_what_would_alias() {
        // A 6 kHz tone at 16 or 24 kHz would fold to 2 kHz at 8 kHz.
        for from in [16000, 24000] {
            let input = sine(from, 6000.0, 30000.0, from as usize / 2);
            let out = resample(&input, from, 8000).unwrap();
            let alias = amplitude(&out, 8000, 2000.0, 400);
            let db = 20.0 * (alias / 30000.0).log10();
            assert!(db < -75.0, "{from}->8000 alias at {db:.1} dB");
        }
        // 24 -> 16: a 10 kHz tone would fold to 6 kHz.
        let input = sine(24000, 10000.0, 30000.0, 12000);
        let out = resample(&input, 24000, 16000).unwrap();
        let db = 20.0 * (amplitude(&out, 16000, 6000.0, 400) / 30000.0).log10();
        assert!(db < -75.0, "24000->16000 alias at {db:.1} dB");
    }

    #[test]
    fn upsampling_leaves_no_images() {
        // A 3 kHz tone at 8 kHz has images at 5 kHz (and 11 kHz at 24 kHz).
        for to in [16000, 24000] {
            let input = sine(8000, 3000.0, 30000.0, 4000);
            let out = resample(&input, 8000, to).unwrap();
            for image in [5000.0, 11000.0] {
                if image < to as f64 / 2.0 {
                    let db = 20.0 * (amplitude(&out, to, image, 400) / 30000.0).log10();
                    assert!(db < -75.0, "8000->{to} image {image} at {db:.1} dB");
                }
            }
        }
    }

    #[test]
    fn streaming_in_20ms_frames_equals_one_shot() {
        for from in RATES {
            for to in RATES {
                let input: Vec<i16> = sine(from, 440.0, 8000.0, from as usize / 2)
                    .iter()
                    .zip(sine(from, 2900.0, 6000.0, from as usize / 2))
                    .map(|(a, b)| a.saturating_add(b))
                    .collect();
                let whole = resample(&input, from, to).unwrap();
                let mut r = Resampler::new(from, to).unwrap();
                let mut streamed = Vec::new();
                // 20 ms frames, plus an odd-sized chunk and an empty one.
                let frame = from as usize / 50;
                r.process(&input[..7], &mut streamed);
                r.process(&[], &mut streamed);
                for chunk in input[7..].chunks(frame) {
                    r.process(chunk, &mut streamed);
                }
                r.flush(&mut streamed);
                assert_eq!(streamed, whole, "{from}->{to}");
                // After flush the converter is fresh again.
                let mut again = Vec::new();
                r.process(&input, &mut again);
                r.flush(&mut again);
                assert_eq!(again, whole);
            }
        }
    }

    #[test]
    fn full_scale_input_clips_instead_of_wrapping() {
        // A full-scale square wave overshoots (Gibbs); samples must saturate.
        let input: Vec<i16> = (0..800)
            .map(|i| {
                if (i / 20) % 2 == 0 {
                    i16::MAX
                } else {
                    i16::MIN
                }
            })
            .collect();
        let out = resample(&input, 8000, 24000).unwrap();
        assert!(out.contains(&i16::MAX) && out.contains(&i16::MIN));
        // No sign flips in the middle of a flat run (what wrapping would cause).
        assert!(out[125..175].iter().all(|&s| s > 0));
    }

    #[test]
    fn errors_and_identity() {
        assert_eq!(
            Resampler::new(0, 8000).unwrap_err(),
            ResampleError::ZeroRate
        );
        assert!(matches!(
            Resampler::new(44101, 8000),
            Err(ResampleError::RatioTooFine { .. })
        ));
        assert_eq!(resample(&[1, 2, 3], 16000, 16000).unwrap(), [1, 2, 3]);
        assert!(Resampler::new(22050, 8000).is_ok());
        assert!(resample(&[], 8000, 16000).unwrap().is_empty());
    }
}
