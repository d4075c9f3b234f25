-- Call records, transcripts, tool calls and appointments.
-- Times are milliseconds since the Unix epoch (UTC); durations are named by unit.

CREATE TABLE calls (
    call_sid                TEXT PRIMARY KEY,
    session_id              TEXT,
    from_number             TEXT,
    to_number               TEXT,
    direction               TEXT,
    -- relay (ConversationRelay) or stream (Media Streams)
    mode                    TEXT,
    status                  TEXT NOT NULL,
    -- <Parameter>s from the TwiML, as a JSON object
    parameters              TEXT,
    started_at              INTEGER NOT NULL,
    ended_at                INTEGER,
    -- measured by voxrelay from connect to end
    duration_ms             INTEGER,
    -- reported by Twilio's status callback
    twilio_duration_secs    INTEGER,
    answered_by             TEXT,
    handoff_data            TEXT,
    turns                   INTEGER NOT NULL DEFAULT 0,
    interrupts              INTEGER NOT NULL DEFAULT 0,
    errors                  INTEGER NOT NULL DEFAULT 0,
    recording_sid           TEXT,
    recording_url           TEXT,
    recording_duration_secs INTEGER,
    recording_path          TEXT,
    updated_at              INTEGER NOT NULL
);
CREATE INDEX calls_newest ON calls (started_at DESC, call_sid DESC);

CREATE TABLE turns (
    call_sid               TEXT NOT NULL,
    seq                    INTEGER NOT NULL,
    -- caller or agent
    role                   TEXT NOT NULL,
    text                   TEXT NOT NULL,
    interrupted            BOOLEAN NOT NULL DEFAULT FALSE,
    -- what the caller heard of an interrupted agent turn
    heard                  TEXT,
    started_at             INTEGER NOT NULL,
    ended_at               INTEGER NOT NULL,
    time_to_first_token_ms INTEGER,
    PRIMARY KEY (call_sid, seq)
);

CREATE TABLE tool_calls (
    call_sid    TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    name        TEXT NOT NULL,
    arguments   TEXT NOT NULL,
    result      TEXT NOT NULL,
    ok          BOOLEAN NOT NULL,
    started_at  INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    PRIMARY KEY (call_sid, seq)
);

CREATE TABLE appointments (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    call_sid       TEXT NOT NULL,
    -- per call, so a retried write is not stored twice
    seq            INTEGER NOT NULL,
    caller_number  TEXT,
    name           TEXT NOT NULL,
    email          TEXT,
    preferred_day  TEXT NOT NULL,
    preferred_time TEXT,
    phone          TEXT,
    notes          TEXT,
    created_at     INTEGER NOT NULL,
    UNIQUE (call_sid, seq)
);
CREATE INDEX appointments_call ON appointments (call_sid);
