-- jobd schema: operator controls and progress (new tables only; nothing existing changes).
-- Like 0004, no STRICT (so SQLite 3.34+ can still read the file): types are CHECKed.
-- queue_pauses: a queue named here is not claimed from by any daemon, across restarts,
-- until it is resumed; its running jobs finish. `jobctl pause` / `jobctl resume` write it.
CREATE TABLE queue_pauses (
    queue      TEXT    PRIMARY KEY
               CHECK (typeof(queue) = 'text' AND length(queue) BETWEEN 1 AND 64
                      AND queue NOT GLOB '*[^A-Za-z0-9_.:-]*'),
    paused_at  INTEGER NOT NULL CHECK (typeof(paused_at) = 'integer'),
    reason     TEXT    CHECK (reason IS NULL OR typeof(reason) = 'text')
) WITHOUT ROWID;

-- job_progress: what a handler reported while an attempt ran (rows read, pages fetched),
-- one row per attempt, kept with it. The dispatcher writes it with its heartbeat (group
-- commit, never a write per update) and once more when the attempt ends.
CREATE TABLE job_progress (
    job_id     INTEGER NOT NULL CHECK (typeof(job_id) = 'integer')
               REFERENCES jobs(id) ON DELETE CASCADE,
    attempt    INTEGER NOT NULL CHECK (typeof(attempt) = 'integer' AND attempt >= 1),
    progress   TEXT    NOT NULL CHECK (typeof(progress) = 'text' AND json_valid(progress)),
    updated_at INTEGER NOT NULL CHECK (typeof(updated_at) = 'integer'),
    PRIMARY KEY (job_id, attempt)
) WITHOUT ROWID;
