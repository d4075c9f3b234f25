//! The SQL both backends run (the multi-row writes are in `batch.rs`; the code that
//! runs them, `impl_store!`, in `backend.rs`). SQLite and PostgreSQL read the same
//! statements: `$n` placeholders, `ON CONFLICT … DO UPDATE`, `RETURNING`-free
//! writes and row-value comparisons work on both, and every number is a 64-bit
//! integer. Every write is idempotent (upserts keyed by call SID and sequence
//! number), so the recorder may retry one whose outcome it does not know.

/// Statuses after which a call is over (Twilio's, plus `handoff` from the agent).
macro_rules! terminal_statuses {
    () => {
        "('completed', 'busy', 'failed', 'no-answer', 'canceled', 'handoff')"
    };
}

macro_rules! call_columns {
    () => {
        "call_sid, session_id, from_number, to_number, direction, mode, status, parameters, \
         started_at, ended_at, duration_ms, twilio_duration_secs, answered_by, handoff_data, \
         turns, interrupts, errors, recording_sid, recording_url, recording_duration_secs, \
         recording_path, updated_at, agent, answered_by_signal, answered_at"
    };
}

/// Makes sure a call row exists before a record refers to it (in case the call's
/// own start record was lost).
pub const ENSURE_CALL: &str = "INSERT INTO calls (call_sid, status, started_at, updated_at) \
     VALUES ($1, 'in-progress', $2, $2) ON CONFLICT (call_sid) DO NOTHING";

pub const MARK_INTERRUPTED: &str =
    "UPDATE turns SET interrupted = TRUE, heard = $3 WHERE call_sid = $1 AND seq = $2";

pub const ADD_TOOL_CALL: &str = "INSERT INTO tool_calls (call_sid, seq, name, arguments, result, \
     ok, started_at, duration_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
     ON CONFLICT (call_sid, seq) DO NOTHING";

pub const ADD_APPOINTMENT: &str = "INSERT INTO appointments (call_sid, seq, caller_number, name, \
     email, preferred_day, preferred_time, phone, notes, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
     ON CONFLICT (call_sid, seq) DO NOTHING";

pub const UPSERT_STATUS: &str = concat!(
    "INSERT INTO calls (call_sid, from_number, to_number, direction, status, \
     twilio_duration_secs, answered_by, answered_by_signal, answered_at, started_at, \
     updated_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, CASE WHEN CAST($7 AS TEXT) IS NULL THEN NULL \
     ELSE 'amd' END, CASE WHEN CAST($7 AS TEXT) IS NULL THEN NULL ELSE $8 END, $8, $8) \
     ON CONFLICT (call_sid) DO UPDATE SET \
     from_number = COALESCE(calls.from_number, excluded.from_number), \
     to_number = COALESCE(calls.to_number, excluded.to_number), \
     direction = COALESCE(calls.direction, excluded.direction), \
     status = CASE \
       WHEN calls.status IN ",
    terminal_statuses!(),
    " AND excluded.status NOT IN ",
    terminal_statuses!(),
    " THEN calls.status \
       WHEN calls.status IN ('handoff', 'interrupted') AND excluded.status = 'completed' \
         THEN calls.status \
       ELSE excluded.status END, \
     twilio_duration_secs = COALESCE(excluded.twilio_duration_secs, calls.twilio_duration_secs), \
     answered_by = COALESCE(excluded.answered_by, calls.answered_by), \
     answered_by_signal = COALESCE(excluded.answered_by_signal, calls.answered_by_signal), \
     answered_at = COALESCE(excluded.answered_at, calls.answered_at), \
     updated_at = excluded.updated_at"
);

pub const SET_RECORDING: &str = "INSERT INTO calls (call_sid, status, started_at, updated_at, \
     recording_sid, recording_url, recording_duration_secs) \
     VALUES ($1, 'unknown', $5, $5, $2, $3, $4) \
     ON CONFLICT (call_sid) DO UPDATE SET \
     recording_sid = COALESCE(excluded.recording_sid, calls.recording_sid), \
     recording_url = COALESCE(excluded.recording_url, calls.recording_url), \
     recording_duration_secs = COALESCE(excluded.recording_duration_secs, \
       calls.recording_duration_secs), \
     updated_at = excluded.updated_at";

/// Our own detection of who answered ([`super::Detection`]): `$2` what, `$3` the
/// signal, `$4` when.
pub const SET_ANSWERED_BY: &str = "INSERT INTO calls (call_sid, status, started_at, \
     updated_at, answered_by, answered_by_signal, answered_at) \
     VALUES ($1, 'in-progress', $4, $4, $2, $3, $4) \
     ON CONFLICT (call_sid) DO UPDATE SET answered_by = excluded.answered_by, \
     answered_by_signal = excluded.answered_by_signal, answered_at = excluded.answered_at, \
     updated_at = excluded.updated_at";

pub const SET_RECORDING_PATH: &str = "INSERT INTO calls (call_sid, status, started_at, \
     updated_at, recording_path) VALUES ($1, 'unknown', $3, $3, $2) \
     ON CONFLICT (call_sid) DO UPDATE SET recording_path = excluded.recording_path, \
     updated_at = excluded.updated_at";

/// A page of calls matching a [`super::CallFilter`]: `$2, $3` the cursor (a
/// far-future one for the first page), `$4` status, `$5` mode, `$6` a number (from
/// or to), `$9` the agent, each `NULL` for any, `$7 ..$8` the start times.
pub const LIST_CALLS: &str = concat!(
    "SELECT ",
    call_columns!(),
    " FROM calls WHERE (started_at, call_sid) < ($2, $3) \
     AND (CAST($4 AS TEXT) IS NULL OR status = $4) \
     AND (CAST($5 AS TEXT) IS NULL OR mode = $5) \
     AND (CAST($6 AS TEXT) IS NULL OR from_number = $6 OR to_number = $6) \
     AND started_at >= $7 AND started_at < $8 \
     AND (CAST($9 AS TEXT) IS NULL OR agent = $9) \
     ORDER BY started_at DESC, call_sid DESC LIMIT $1"
);

pub const GET_CALL: &str = concat!(
    "SELECT ",
    call_columns!(),
    ", (SELECT COUNT(*) FROM turns t WHERE t.call_sid = calls.call_sid) AS n_turns, \
     (SELECT COUNT(*) FROM tool_calls x WHERE x.call_sid = calls.call_sid) AS n_tool_calls, \
     (SELECT COUNT(*) FROM appointments a WHERE a.call_sid = calls.call_sid) AS n_appointments \
     FROM calls WHERE call_sid = $1"
);

/// [`NEXT_SEQS`] for several calls at once: the calls in `IN (…)` (appended) that
/// have a row; a call without one has no records.
pub const NEXT_SEQS_MANY: &str = "SELECT c.call_sid, \
     (SELECT COALESCE(MAX(seq) + 1, 0) FROM tool_calls x WHERE x.call_sid = c.call_sid) AS next_tool_call, \
     (SELECT COALESCE(MAX(seq) + 1, 0) FROM appointments a WHERE a.call_sid = c.call_sid) AS next_appointment, \
     (SELECT COALESCE(MAX(seq) + 1, 0) FROM turns t WHERE t.call_sid = c.call_sid) AS next_turn \
     FROM calls c WHERE c.call_sid IN ";

pub const NEXT_SEQS: &str = "SELECT \
     (SELECT COALESCE(MAX(seq) + 1, 0) FROM tool_calls WHERE call_sid = $1) AS next_tool_call, \
     (SELECT COALESCE(MAX(seq) + 1, 0) FROM appointments WHERE call_sid = $1) AS next_appointment, \
     (SELECT COALESCE(MAX(seq) + 1, 0) FROM turns WHERE call_sid = $1) AS next_turn";

pub const CALL_EXISTS: &str = "SELECT call_sid FROM calls WHERE call_sid = $1";

pub const TURNS: &str = "SELECT seq, role, text, interrupted, heard, started_at, ended_at, \
     time_to_first_token_ms, llm_first_token_ms, partial FROM turns WHERE call_sid = $1 AND seq > $2 ORDER BY seq LIMIT $3";

/// The tool calls that started within a page of turns: from the page's first
/// turn (or the start, on the first page) to the next page's first turn.
pub const TOOL_CALLS: &str = "SELECT seq, name, arguments, result, ok, started_at, duration_ms \
     FROM tool_calls WHERE call_sid = $1 AND started_at >= $2 AND started_at < $3 ORDER BY seq";

macro_rules! appointment_columns {
    () => {
        "id, call_sid, seq, caller_number, name, email, preferred_day, preferred_time, phone, \
         notes, created_at"
    };
}

/// Calls started per hour since `$1` (hours as `started_at / 3600000`).
pub const CALLS_PER_HOUR: &str = "SELECT started_at / 3600000 AS hour, COUNT(*) AS n \
     FROM calls WHERE started_at >= $1 GROUP BY started_at / 3600000 ORDER BY hour";

/// Agent replies per hour since `$1`.
pub const REPLIES_PER_HOUR: &str = "SELECT started_at / 3600000 AS hour, COUNT(*) AS n \
     FROM turns WHERE started_at >= $1 AND role = 'agent' \
     GROUP BY started_at / 3600000 ORDER BY hour";

/// Calls since `$1` by status (how they ended, or `in-progress`).
pub const CALLS_BY_STATUS: &str = "SELECT status, COUNT(*) AS n FROM calls \
     WHERE started_at >= $1 GROUP BY status ORDER BY n DESC, status";

/// The first-token latencies of the latest replies since `$1`, at most `$2`.
pub const RECENT_FIRST_TOKENS: &str = "SELECT time_to_first_token_ms FROM turns \
     WHERE started_at >= $1 AND time_to_first_token_ms IS NOT NULL \
     ORDER BY started_at DESC LIMIT $2";

/// One call's appointments, in the order they were booked.
pub const CALL_APPOINTMENTS: &str = concat!(
    "SELECT ",
    appointment_columns!(),
    " FROM appointments WHERE call_sid = $1 ORDER BY seq"
);

pub const LIST_APPOINTMENTS: &str = concat!(
    "SELECT ",
    appointment_columns!(),
    " FROM appointments ORDER BY id DESC LIMIT $1"
);

pub const LIST_APPOINTMENTS_BEFORE: &str = concat!(
    "SELECT ",
    appointment_columns!(),
    " FROM appointments WHERE id < $2 ORDER BY id DESC LIMIT $1"
);
