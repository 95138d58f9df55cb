-- jobd schema, version 1: the jobs table and one row per attempt.
-- Times are integer milliseconds since the Unix epoch (UTC). The defaults let another
-- program enqueue with a bare INSERT INTO jobs(kind, payload) VALUES (...).
-- State tests are written as OR chains, not IN lists: SQLite builds a temporary B-tree
-- for an IN list on every row it checks. The store's guards use the same text, so the
-- partial indexes match its queries.

CREATE TABLE jobs (
    id               INTEGER PRIMARY KEY,
    queue            TEXT    NOT NULL DEFAULT 'default' CHECK (length(queue) > 0),
    kind             TEXT    NOT NULL CHECK (length(kind) > 0),
    payload          TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(payload)),
    state            TEXT    NOT NULL DEFAULT 'queued'
                     CHECK (state = 'queued' OR state = 'running' OR state = 'retrying'
                            OR state = 'waiting' OR state = 'succeeded' OR state = 'dead'
                            OR state = 'cancelled'),
    priority         INTEGER NOT NULL DEFAULT 0,
    attempts         INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts     INTEGER CHECK (max_attempts IS NULL OR max_attempts >= 1),
    run_at           INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000 AS INTEGER)),
    lease_until      INTEGER,
    worker           TEXT,
    unique_key       TEXT CHECK (unique_key IS NULL OR length(unique_key) > 0),
    parent_id        INTEGER REFERENCES jobs(id) ON DELETE SET NULL,
    last_error       TEXT,
    deadline_at      INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0 CHECK (cancel_requested = 0 OR cancel_requested = 1),
    -- Times it waited for children and was resumed (fan-in); its handler reads it.
    stage            INTEGER NOT NULL DEFAULT 0 CHECK (stage >= 0),
    created_at       INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000 AS INTEGER)),
    updated_at       INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000 AS INTEGER)),
    finished_at      INTEGER,
    source           TEXT,
    -- Terminal states, and only they, carry finished_at.
    CHECK ((state = 'succeeded' OR state = 'dead' OR state = 'cancelled') = (finished_at IS NOT NULL)),
    -- A running job holds a lease; nothing else does.
    CHECK ((state = 'running') = (lease_until IS NOT NULL))
) STRICT;

-- The claim: ready rows in priority order. Partial, so finished rows cost nothing.
CREATE INDEX jobs_ready ON jobs (priority DESC, run_at, id) WHERE (state = 'queued' OR state = 'retrying');
-- When the next waiting job becomes due, for the dispatcher's timer.
CREATE INDEX jobs_due ON jobs (run_at) WHERE (state = 'queued' OR state = 'retrying');
-- The reaper: leases that ran out.
CREATE INDEX jobs_leases ON jobs (lease_until) WHERE state = 'running';
-- Retention and "finished in the last hour".
CREATE INDEX jobs_finished ON jobs (state, finished_at) WHERE finished_at IS NOT NULL;
-- A unique key names one job for as long as its row exists.
CREATE UNIQUE INDEX jobs_unique_key ON jobs (unique_key) WHERE unique_key IS NOT NULL;
-- A job's children: jobctl show, and whether a waiting parent's last child is done.
CREATE INDEX jobs_parent ON jobs (parent_id, state) WHERE parent_id IS NOT NULL;

CREATE TABLE job_attempts (
    id          INTEGER PRIMARY KEY,
    job_id      INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    attempt     INTEGER NOT NULL CHECK (attempt >= 1),
    worker      TEXT,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER NOT NULL CHECK (finished_at >= started_at),
    outcome     TEXT    NOT NULL
                CHECK (outcome = 'succeeded' OR outcome = 'retry' OR outcome = 'dead'
                       OR outcome = 'cancelled' OR outcome = 'interrupted' OR outcome = 'lease_expired'
                       OR outcome = 'waiting'),
    error       TEXT,
    detail      TEXT CHECK (detail IS NULL OR json_valid(detail))
) STRICT;

CREATE INDEX job_attempts_job ON job_attempts (job_id, attempt);
