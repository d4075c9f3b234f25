-- Call state that outlives a process and is shared by every replica.
-- Times are milliseconds since the Unix epoch (UTC).

-- An agent turn gets its row when its first words go out and is completed at its
-- end; until then it is partial (its text is what was sent so far).
ALTER TABLE turns ADD COLUMN partial BOOLEAN NOT NULL DEFAULT FALSE;

-- The replica whose socket carries the call while it is in progress.
ALTER TABLE calls ADD COLUMN owner TEXT;
CREATE INDEX calls_live ON calls (status, owner);

-- Every running replica, with its heartbeat: a call whose owner stopped beating is
-- closed by any other replica.
CREATE TABLE replicas (
    id           TEXT PRIMARY KEY,
    started_at   INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL
);

-- Short-lived facts a later request may need on any replica: used call tokens,
-- outbound nonce bindings, armed reconnects, Media Streams endings, socket leases.
CREATE TABLE call_state (
    kind       TEXT NOT NULL,
    key        TEXT NOT NULL,
    value      TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE INDEX call_state_expiry ON call_state (expires_at);
