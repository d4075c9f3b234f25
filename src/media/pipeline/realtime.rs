//! The `openai-realtime` pipeline: speech to speech through OpenAI Realtime.

use super::{Pipeline, PipelineContext, PipelineError};

pub async fn connect(_ctx: PipelineContext) -> Result<Box<dyn Pipeline>, PipelineError> {
    Err(PipelineError::NotConfigured(
        "the openai-realtime pipeline is not available yet".into(),
    ))
}
