//! Media path benchmark: μ-law, resampling and the per-frame codec work, on one
//! core. Run with `cargo bench --bench media_codecs` (release profile); it prints
//! the tables pasted into BENCHMARKS.md ("Media path: codecs and resampling").
//!
//! Throughput is reported as "× real time": seconds of audio processed per second
//! of CPU on one thread. Each figure is the best of several rounds (the minimum
//! time is the least disturbed by other processes on a shared machine); per-frame
//! latencies are percentiles over many single frames.

use std::hint::black_box;
use std::time::{Duration, Instant};

use voxrelay::audio::{frame, mulaw, resample::Resampler};
use voxrelay::media::protocol::{self, Inbound, Outbound};

const ROUNDS: usize = 7;

/// Best time of `ROUNDS` runs of `f`.
fn best_of(mut f: impl FnMut()) -> Duration {
    f(); // warm-up
    (0..ROUNDS)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap_or_default()
}

/// A minute of speech-like audio at `rate`: two tones and a sweep, with pauses.
fn speechy(rate: u32, seconds: usize) -> Vec<i16> {
    (0..rate as usize * seconds)
        .map(|n| {
            let t = n as f64 / rate as f64;
            let envelope = if (t * 2.0).fract() < 0.7 { 1.0 } else { 0.05 };
            let s = 6000.0 * (2.0 * std::f64::consts::PI * 220.0 * t).sin()
                + 3000.0 * (2.0 * std::f64::consts::PI * 1250.0 * t).sin()
                + 1500.0 * (2.0 * std::f64::consts::PI * (300.0 * t + 600.0 * t * t)).sin();
            (envelope * s) as i16
        })
        .collect()
}

fn times_real_time(audio_seconds: f64, took: Duration) -> f64 {
    audio_seconds / took.as_secs_f64()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn main() {
    let seconds = 60usize;
    println!("## μ-law (one core, {seconds} s of 8 kHz audio per round)\n");
    println!("| operation | ns/sample | × real time |");
    println!("|---|---:|---:|");
    let pcm = speechy(8000, seconds);
    let codes = mulaw::encode(&pcm);
    let samples = pcm.len() as f64;
    let mut out_codes = Vec::with_capacity(pcm.len());
    let mut out_pcm = Vec::with_capacity(pcm.len());
    let rows: [(&str, Duration); 3] = [
        (
            "decode (256-entry table)",
            best_of(|| {
                out_pcm.clear();
                mulaw::decode_into(black_box(&codes), &mut out_pcm);
                black_box(&out_pcm);
            }),
        ),
        (
            "encode (16 Ki-entry table, used)",
            best_of(|| {
                out_codes.clear();
                mulaw::encode_into(black_box(&pcm), &mut out_codes);
                black_box(&out_codes);
            }),
        ),
        (
            "encode (bias/segment arithmetic)",
            best_of(|| {
                out_codes.clear();
                out_codes.extend(
                    black_box(&pcm)
                        .iter()
                        .map(|&s| mulaw::encode_sample_arith(s)),
                );
                black_box(&out_codes);
            }),
        ),
    ];
    for (name, took) in rows {
        println!(
            "| {name} | {:.2} | {:.0} |",
            took.as_nanos() as f64 / samples,
            times_real_time(seconds as f64, took)
        );
    }

    println!("\n## Resampling, fed one 20 ms frame at a time (one core, {seconds} s per round)\n");
    println!(
        "| from → to | taps/output | passband ripple | stopband | latency | µs per 20 ms frame | × real time |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (from, to) in [
        (8000, 16000),
        (8000, 24000),
        (16000, 8000),
        (24000, 8000),
        (16000, 24000),
        (24000, 16000),
    ] {
        let input = speechy(from, seconds);
        let mut r = Resampler::new(from, to).expect("supported rates");
        let mut out = Vec::with_capacity(input.len() * to as usize / from as usize + 64);
        let per_frame = frame::samples_per_frame(from);
        let took = best_of(|| {
            out.clear();
            r.reset();
            for chunk in black_box(&input).chunks(per_frame) {
                r.process(chunk, &mut out);
            }
            black_box(&out);
        });
        let (ripple, stop) = r.filter_figures();
        let frames = (seconds * frame::FRAMES_PER_SECOND as usize) as f64;
        println!(
            "| {} → {} kHz | {} | ±{ripple:.4} dB | {stop:.1} dB | {:.1} ms | {:.2} | {:.0} |",
            from / 1000,
            to / 1000,
            r.taps_per_output(),
            r.latency().as_secs_f64() * 1000.0,
            took.as_secs_f64() * 1e6 / frames,
            times_real_time(seconds as f64, took)
        );
    }

    println!("\n## Codec work per 20 ms frame (one core, 10 000 frames each)\n");
    println!("| path | p50 | p99 | max |");
    println!("|---|---:|---:|---:|");
    let frames = 10_000usize;
    // Inbound: Twilio's JSON -> μ-law -> PCM16 8 kHz -> 16 kHz (an STT's rate).
    let caller = speechy(8000, frames / frame::FRAMES_PER_SECOND as usize);
    let messages: Vec<String> = caller
        .chunks(frame::FRAME_BYTES)
        .enumerate()
        .map(|(i, pcm)| {
            let mut media = protocol::Media::from_mulaw(&mulaw::encode(pcm));
            media.track = Some("inbound".into());
            media.chunk = Some(i as u64 + 1);
            media.timestamp = Some(i as u64 * 20);
            Inbound::Media(protocol::MediaEvent {
                sequence_number: Some(i as u64 + 3),
                stream_sid: "MZ0123456789abcdef0123456789abcdef".into(),
                media,
            })
            .to_json()
        })
        .collect();
    let mut up = Resampler::new(8000, 16000).expect("supported");
    let mut codes = Vec::with_capacity(frame::FRAME_BYTES);
    let mut pcm8 = Vec::with_capacity(frame::FRAME_BYTES);
    let mut pcm16 = Vec::with_capacity(2 * frame::FRAME_BYTES + 64);
    let inbound = per_frame(&messages, |text| {
        let Ok(Inbound::Media(m)) = protocol::parse_inbound(text) else {
            panic!("bench message did not parse")
        };
        codes.clear();
        m.media.decode_payload_into(&mut codes).expect("valid");
        pcm8.clear();
        mulaw::decode_into(&codes, &mut pcm8);
        pcm16.clear();
        up.process(&pcm8, &mut pcm16);
        black_box(&pcm16);
    });
    // Outbound: TTS PCM16 at 24 kHz -> 8 kHz -> μ-law -> Twilio's JSON.
    let agent = speechy(24000, frames / frame::FRAMES_PER_SECOND as usize);
    let agent_frames: Vec<&[i16]> = agent.chunks(frame::samples_per_frame(24000)).collect();
    let mut down = Resampler::new(24000, 8000).expect("supported");
    let mut pcm_out = Vec::with_capacity(frame::FRAME_BYTES + 64);
    let mut codes_out = Vec::with_capacity(frame::FRAME_BYTES + 64);
    let outbound = per_frame(&agent_frames, |pcm| {
        pcm_out.clear();
        down.process(pcm, &mut pcm_out);
        codes_out.clear();
        mulaw::encode_into(&pcm_out, &mut codes_out);
        black_box(Outbound::media("MZ0123456789abcdef0123456789abcdef", &codes_out).to_json());
    });
    for (name, mut times) in [
        (
            "inbound: parse JSON, base64, μ-law decode, 8→16 kHz",
            inbound,
        ),
        ("outbound: 24→8 kHz, μ-law encode, base64, JSON", outbound),
    ] {
        times.sort_unstable();
        println!(
            "| {name} | {:.1} µs | {:.1} µs | {:.1} µs |",
            micros(percentile(&times, 0.5)),
            micros(percentile(&times, 0.99)),
            micros(*times.last().unwrap_or(&Duration::ZERO))
        );
    }
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Times `f` on each item separately (after one warm-up pass).
fn per_frame<T>(items: &[T], mut f: impl FnMut(&T)) -> Vec<Duration> {
    for item in items.iter().take(100) {
        f(item);
    }
    items
        .iter()
        .map(|item| {
            let t = Instant::now();
            f(item);
            t.elapsed()
        })
        .collect()
}
