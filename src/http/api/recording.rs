//! `GET /api/calls/{sid}/recording`: the stereo WAV a Media Streams call recorded
//! (`RECORD_CALLS`), streamed from `RECORDINGS_DIR`. Only a file inside that folder
//! is served, whatever the record says; Twilio's own recordings are links in the
//! call's record (`recording.url`), not served here.

use std::path::{Path, PathBuf};

use warp::Reply;
use warp::http::HeaderValue;
use warp::reply::Response;

use super::{not_found, store_failed};
use crate::state::AppState;

pub(super) async fn get(call_sid: String, state: AppState) -> Response {
    let detail = match state.store.get_call(&call_sid).await {
        Ok(Some(detail)) => detail,
        Ok(None) => return not_found(&call_sid),
        Err(e) => return store_failed(e),
    };
    let Some(path) = detail.call.recording.as_ref().and_then(|r| r.path.clone()) else {
        return super::HttpError::NotFound(format!("call {call_sid:?} has no local recording"))
            .into_response();
    };
    let Some(path) = inside(
        Path::new(&state.config.media.recordings_dir),
        Path::new(&path),
    ) else {
        tracing::warn!("a recording path outside RECORDINGS_DIR was not served");
        return super::HttpError::NotFound("the recording is not available".into()).into_response();
    };
    let file = match tokio::fs::File::open(&path).await {
        Ok(file) => file,
        Err(e) => {
            tracing::warn!(error = %e, "cannot open a recording");
            return super::HttpError::NotFound("the recording file is gone".into()).into_response();
        }
    };
    let length = file.metadata().await.ok().map(|m| m.len());
    let mut response = warp::reply::stream(tokio_util::io::ReaderStream::new(file)).into_response();
    let headers = response.headers_mut();
    headers.insert("content-type", HeaderValue::from_static("audio/wav"));
    if let Some(length) = length {
        headers.insert("content-length", HeaderValue::from(length));
    }
    response
}

/// `path` when it names a file inside `dir` (both resolved), else `None`.
fn inside(dir: &Path, path: &Path) -> Option<PathBuf> {
    let dir = dir.canonicalize().ok()?;
    let path = path.canonicalize().ok()?;
    path.starts_with(&dir).then_some(path)
}
