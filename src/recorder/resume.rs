//! A resumed call's conversation read back from the store, on any replica.
//! May import the store and the agent's resume type.

use crate::store::{Store, StoreError};

/// Turns of a stored conversation a resumed call takes back at most (the agent's
/// history bound trims further).
pub const RESUME_TURNS: i64 = 200;

/// The call's conversation as the store holds it, for a session that resumes it
/// on any replica: its last [`RESUME_TURNS`] turns (an agent turn as the caller
/// heard it when interrupted, a partial one as far as it had gone out) and the
/// next turn's number. `None` when nothing was said yet.
pub async fn stored_conversation(
    store: &dyn Store,
    call_sid: &str,
) -> Result<Option<crate::agent::Resume>, StoreError> {
    use crate::agent::Speaker;
    let next = store.next_seqs(call_sid).await?;
    if next.turn == 0 {
        return Ok(None);
    }
    let after = (next.turn - 1 - RESUME_TURNS).max(-1);
    let after = (after >= 0).then_some(after);
    let Some(page) = store
        .transcript_page(call_sid, after, RESUME_TURNS as u32)
        .await?
    else {
        return Ok(None);
    };
    let turns = page
        .turns
        .into_iter()
        .filter_map(|turn| {
            let speaker = if turn.role == "caller" {
                Speaker::Caller
            } else {
                Speaker::Agent
            };
            let text = match (turn.interrupted, turn.heard) {
                (true, Some(heard)) => heard,
                _ => turn.text,
            };
            (!text.trim().is_empty()).then_some((speaker, text))
        })
        .collect();
    Ok(Some(crate::agent::Resume::Transcript {
        turns,
        next_seq: u32::try_from(next.turn).unwrap_or(u32::MAX),
    }))
}
