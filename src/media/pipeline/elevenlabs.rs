//! The `elevenlabs-agent` pipeline: a bridge to an ElevenLabs Conversational AI agent.

use super::{Pipeline, PipelineContext, PipelineError};

pub async fn connect(_ctx: PipelineContext) -> Result<Box<dyn Pipeline>, PipelineError> {
    Err(PipelineError::NotConfigured(
        "the elevenlabs-agent pipeline is not available yet".into(),
    ))
}
