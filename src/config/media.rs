//! The `[media]` part of the configuration: which Media Streams pipeline answers,
//! and recordings. May import `vars` and the sections it depends on (LLM, speech).

use super::{LlmConfig, SpeechConfig, Vars};

/// Which speech pipeline a Media Streams call uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaPipelineKind {
    /// OpenAI Realtime speech to speech (µ-law both ways, tools from the registry).
    OpenAiRealtime,
    /// An ElevenLabs Conversational AI agent.
    ElevenLabsAgent,
    /// Speech-to-text, our agent and LLM, ElevenLabs streaming TTS.
    Cascade,
}

impl MediaPipelineKind {
    pub const NAMES: [&'static str; 3] = ["openai-realtime", "elevenlabs-agent", "cascade"];

    /// From `MEDIA_PIPELINE` or a `<Parameter name="pipeline">` (case-insensitive).
    pub fn parse(name: &str) -> Option<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "openai-realtime" | "realtime" => Some(Self::OpenAiRealtime),
            "elevenlabs-agent" | "elevenlabs" => Some(Self::ElevenLabsAgent),
            "cascade" => Some(Self::Cascade),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::OpenAiRealtime => "openai-realtime",
            Self::ElevenLabsAgent => "elevenlabs-agent",
            Self::Cascade => "cascade",
        }
    }
}

/// The Media Streams mode (`/twiml/stream`, `/media-stream`).
#[derive(Clone, Debug)]
pub struct MediaConfig {
    /// `MEDIA_PIPELINE`; unset: `openai-realtime` with `OPENAI_API_KEY`, else
    /// `elevenlabs-agent` with `ELEVENLABS_AGENT_ID`, else `cascade` with
    /// `ELEVENLABS_API_KEY`, else none (media calls are refused politely: hung up).
    pub pipeline: Option<MediaPipelineKind>,
    /// `RECORD_CALLS`: a stereo WAV per call (caller left, agent right).
    pub record_calls: bool,
    /// `RECORDINGS_DIR` (default `recordings`).
    pub recordings_dir: String,
    /// `MEDIA_UPSTREAM_CHUNK_MS` (20–200, a multiple of 20; default 20) as a number
    /// of 20 ms frames: caller audio goes to the pipeline's upstream in chunks of
    /// this many frames. Fewer writes per call; the upstream hears the caller up to
    /// the chunk's length minus 20 ms later.
    pub upstream_chunk_frames: usize,
}

/// Longest `MEDIA_UPSTREAM_CHUNK_MS`.
const MAX_UPSTREAM_CHUNK_MS: u64 = 200;

/// The `[media]` part of the configuration.
pub(super) fn read(env: &mut Vars, llm: &LlmConfig, speech: &SpeechConfig) -> MediaConfig {
    let pipeline = match env.get("MEDIA_PIPELINE") {
        Some(name) => {
            let kind = MediaPipelineKind::parse(&name);
            if kind.is_none() {
                env.errors.push(format!(
                    "MEDIA_PIPELINE must be one of {}, got {name:?}",
                    MediaPipelineKind::NAMES.join(", ")
                ));
            }
            kind
        }
        None if llm.openai_api_key.is_some() => Some(MediaPipelineKind::OpenAiRealtime),
        None if speech.elevenlabs_agent_id.is_some() && speech.elevenlabs_api_key.is_some() => {
            Some(MediaPipelineKind::ElevenLabsAgent)
        }
        None if speech.elevenlabs_api_key.is_some() => Some(MediaPipelineKind::Cascade),
        None => None,
    };
    let chunk_ms: u64 = env.parse("MEDIA_UPSTREAM_CHUNK_MS", 20u64);
    let upstream_chunk_frames = if chunk_ms % 20 == 0
        && (20..=MAX_UPSTREAM_CHUNK_MS).contains(&chunk_ms)
    {
        (chunk_ms / 20) as usize
    } else {
        env.errors.push(format!(
            "MEDIA_UPSTREAM_CHUNK_MS must be a multiple of 20 from 20 to {MAX_UPSTREAM_CHUNK_MS}, got {chunk_ms}"
        ));
        1
    };
    MediaConfig {
        pipeline,
        upstream_chunk_frames,
        record_calls: env.parse("RECORD_CALLS", false),
        recordings_dir: env
            .get("RECORDINGS_DIR")
            .unwrap_or_else(|| "recordings".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::config::tests::vars;

    #[test]
    fn upstream_chunks_are_whole_frames_within_bounds() {
        let frames = |ms: &str| {
            Config::from_vars(vars(&[("MEDIA_UPSTREAM_CHUNK_MS", ms)]))
                .map(|c| c.media.upstream_chunk_frames)
                .map_err(|e| e.to_string())
        };
        assert_eq!(
            Config::from_vars(vars(&[]))
                .unwrap()
                .media
                .upstream_chunk_frames,
            1
        );
        assert_eq!(frames("20"), Ok(1));
        assert_eq!(frames("60"), Ok(3));
        assert_eq!(frames("200"), Ok(10));
        for bad in ["0", "30", "220", "sixty"] {
            let err = frames(bad).unwrap_err();
            assert!(err.contains("MEDIA_UPSTREAM_CHUNK_MS"), "{bad}: {err}");
        }
    }
}
