-- The two first-token times of an agent reply: the caller's turn to the first
-- token out (time_to_first_token_ms, a filler included), and the LLM request to
-- the LLM's first token (llm_first_token_ms). Before this, the first column held
-- the second; older rows keep it.
ALTER TABLE turns ADD COLUMN llm_first_token_ms BIGINT;
