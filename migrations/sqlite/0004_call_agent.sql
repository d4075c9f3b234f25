-- Which agent took each call (README "Agents per number"): `default`, or the name
-- of an agent file in AGENTS_DIR. Older rows have none.
ALTER TABLE calls ADD COLUMN agent TEXT;
-- Who answered, by which signal and when (README "How calls end, and who
-- answered"): answered_by is Twilio's AnsweredBy (signal `amd`) or our own
-- detection from the caller's words (`voicemail` or `screening`, signal
-- `transcript`); answered_at is when it was known (Unix milliseconds).
ALTER TABLE calls ADD COLUMN answered_by_signal TEXT;
ALTER TABLE calls ADD COLUMN answered_at BIGINT;
