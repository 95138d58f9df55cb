-- jobd schema: operator controls and progress (new tables only; nothing existing changes).
-- queue_pauses: a queue named here is not claimed from by any daemon, across restarts,
-- until it is resumed; its running jobs finish. `jobctl pause` / `jobctl resume` write it.
CREATE TABLE queue_pauses (
    queue      TEXT    PRIMARY KEY CHECK (length(queue) > 0),
    paused_at  INTEGER NOT NULL,
    reason     TEXT
) STRICT, WITHOUT ROWID;

-- job_progress: what a handler reported while an attempt ran (rows read, pages fetched),
-- one row per attempt, kept with it. The dispatcher writes it with its heartbeat (group
-- commit, never a write per update) and once more when the attempt ends.
CREATE TABLE job_progress (
    job_id     INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    attempt    INTEGER NOT NULL CHECK (attempt >= 1),
    progress   TEXT    NOT NULL CHECK (json_valid(progress)),
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (job_id, attempt)
) STRICT, WITHOUT ROWID;
