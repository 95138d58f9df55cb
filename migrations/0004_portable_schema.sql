-- jobd schema, version 4: a schema every SQLite from 3.34 on can read and write, so any
-- program can enqueue with its system SQLite; bounded queue and kind names; and the two
-- columns that tell a claimed job from a started one.
--
-- * No STRICT: a STRICT table makes the whole file unreadable to SQLite before 3.37.
--   Each column's type is checked instead with CHECK (typeof(x) = ...), which refuses
--   what STRICT refused (text in an integer column, a blob anywhere) on every version.
-- * Time defaults from julianday('now') instead of unixepoch('subsec') (3.42+):
--   integer milliseconds since the Unix epoch, rounded.
-- * queue and kind: 1 to 64 characters of A-Za-z0-9_.:- (the jobs this database holds
--   were checked by the store before this runs; see schema.rs).
-- * jobs.started_at: when the handler of the running attempt started, recorded by the
--   daemon shortly after it starts (NULL: claimed ahead, not started yet).
--   jobs.claim: which claim of the daemon holds the row; its start journal names it.
--
-- SQLite cannot change a column's default or constraints in place: each table is rebuilt
-- (create the new one, copy every row with its id, drop the old one, rename, recreate the
-- indexes), with foreign keys off for the rebuild and checked before the commit.
-- Every state test stays an OR chain (see 0001).

CREATE TABLE jobs_new (
    id               INTEGER PRIMARY KEY,
    -- The names jobd itself uses are accepted before the pattern is tried: the GLOB is
    -- the costliest check of an insert (a bare INSERT took about half as long again).
    queue            TEXT    NOT NULL DEFAULT 'default'
                     CHECK (queue = 'default'
                            OR (typeof(queue) = 'text' AND length(queue) BETWEEN 1 AND 64
                                AND queue NOT GLOB '*[^A-Za-z0-9_.:-]*')),
    kind             TEXT    NOT NULL
                     CHECK (kind = 'noop' OR kind = 'exec' OR kind = 'http' OR kind = 'notify'
                            OR kind = 'csv_import' OR kind = 'http_pull' OR kind = 'relay'
                            OR kind = 'oneroster' OR kind = 'oneroster_status'
                            OR (typeof(kind) = 'text' AND length(kind) BETWEEN 1 AND 64
                                AND kind NOT GLOB '*[^A-Za-z0-9_.:-]*')),
    payload          TEXT    NOT NULL DEFAULT '{}'
                     CHECK (typeof(payload) = 'text' AND json_valid(payload)),
    state            TEXT    NOT NULL DEFAULT 'queued'
                     CHECK (state = 'queued' OR state = 'running' OR state = 'retrying'
                            OR state = 'waiting' OR state = 'succeeded' OR state = 'dead'
                            OR state = 'cancelled'),
    priority         INTEGER NOT NULL DEFAULT 0 CHECK (typeof(priority) = 'integer'),
    attempts         INTEGER NOT NULL DEFAULT 0
                     CHECK (typeof(attempts) = 'integer' AND attempts >= 0),
    max_attempts     INTEGER
                     CHECK (max_attempts IS NULL
                            OR (typeof(max_attempts) = 'integer' AND max_attempts >= 1)),
    run_at           INTEGER NOT NULL
                     DEFAULT (CAST(round((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER))
                     CHECK (typeof(run_at) = 'integer'),
    lease_until      INTEGER CHECK (lease_until IS NULL OR typeof(lease_until) = 'integer'),
    worker           TEXT    CHECK (worker IS NULL OR typeof(worker) = 'text'),
    unique_key       TEXT
                     CHECK (unique_key IS NULL
                            OR (typeof(unique_key) = 'text' AND length(unique_key) > 0)),
    parent_id        INTEGER REFERENCES jobs(id) ON DELETE SET NULL
                     CHECK (parent_id IS NULL OR typeof(parent_id) = 'integer'),
    last_error       TEXT    CHECK (last_error IS NULL OR typeof(last_error) = 'text'),
    deadline_at      INTEGER CHECK (deadline_at IS NULL OR typeof(deadline_at) = 'integer'),
    cancel_requested INTEGER NOT NULL DEFAULT 0 CHECK (cancel_requested = 0 OR cancel_requested = 1),
    -- Times it waited for children and was resumed (fan-in); its handler reads it.
    stage            INTEGER NOT NULL DEFAULT 0 CHECK (typeof(stage) = 'integer' AND stage >= 0),
    created_at       INTEGER NOT NULL
                     DEFAULT (CAST(round((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER))
                     CHECK (typeof(created_at) = 'integer'),
    updated_at       INTEGER NOT NULL
                     DEFAULT (CAST(round((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER))
                     CHECK (typeof(updated_at) = 'integer'),
    finished_at      INTEGER CHECK (finished_at IS NULL OR typeof(finished_at) = 'integer'),
    source           TEXT    CHECK (source IS NULL OR typeof(source) = 'text'),
    -- When the running attempt's handler started; NULL while it is claimed ahead.
    started_at       INTEGER
                     CHECK (started_at IS NULL OR (typeof(started_at) = 'integer' AND state = 'running')),
    -- The daemon's number for the claim that holds this running row (its start journal
    -- names it); NULL for rows claimed by a jobd older than this schema, or not running.
    claim            INTEGER
                     CHECK (claim IS NULL OR (typeof(claim) = 'integer' AND state = 'running')),
    -- Terminal states, and only they, carry finished_at.
    CHECK ((state = 'succeeded' OR state = 'dead' OR state = 'cancelled') = (finished_at IS NOT NULL)),
    -- A running job holds a lease; nothing else does.
    CHECK ((state = 'running') = (lease_until IS NOT NULL))
);

INSERT INTO jobs_new (id, queue, kind, payload, state, priority, attempts, max_attempts,
                      run_at, lease_until, worker, unique_key, parent_id, last_error,
                      deadline_at, cancel_requested, stage, created_at, updated_at,
                      finished_at, source)
    SELECT id, queue, kind, payload, state, priority, attempts, max_attempts,
           run_at, lease_until, worker, unique_key, parent_id, last_error,
           deadline_at, cancel_requested, stage, created_at, updated_at,
           finished_at, source
    FROM jobs ORDER BY id;

DROP TABLE jobs;
ALTER TABLE jobs_new RENAME TO jobs;

CREATE INDEX jobs_ready ON jobs (priority DESC, run_at, id) WHERE (state = 'queued' OR state = 'retrying');
CREATE INDEX jobs_due ON jobs (run_at) WHERE (state = 'queued' OR state = 'retrying');
CREATE INDEX jobs_leases ON jobs (lease_until) WHERE state = 'running';
CREATE INDEX jobs_finished ON jobs (state, finished_at) WHERE finished_at IS NOT NULL;
CREATE UNIQUE INDEX jobs_unique_key ON jobs (unique_key) WHERE unique_key IS NOT NULL;
CREATE INDEX jobs_parent ON jobs (parent_id, state) WHERE parent_id IS NOT NULL;

CREATE TABLE job_attempts_new (
    id          INTEGER PRIMARY KEY,
    job_id      INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE
                CHECK (typeof(job_id) = 'integer'),
    attempt     INTEGER NOT NULL CHECK (typeof(attempt) = 'integer' AND attempt >= 1),
    worker      TEXT    CHECK (worker IS NULL OR typeof(worker) = 'text'),
    started_at  INTEGER NOT NULL CHECK (typeof(started_at) = 'integer'),
    finished_at INTEGER NOT NULL
                CHECK (typeof(finished_at) = 'integer' AND finished_at >= started_at),
    outcome     TEXT    NOT NULL
                CHECK (outcome = 'succeeded' OR outcome = 'retry' OR outcome = 'dead'
                       OR outcome = 'cancelled' OR outcome = 'interrupted' OR outcome = 'lease_expired'
                       OR outcome = 'waiting'),
    error       TEXT    CHECK (error IS NULL OR typeof(error) = 'text'),
    detail      TEXT    CHECK (detail IS NULL OR (typeof(detail) = 'text' AND json_valid(detail)))
);

INSERT INTO job_attempts_new (id, job_id, attempt, worker, started_at, finished_at, outcome,
                              error, detail)
    SELECT id, job_id, attempt, worker, started_at, finished_at, outcome, error, detail
    FROM job_attempts ORDER BY id;

DROP TABLE job_attempts;
ALTER TABLE job_attempts_new RENAME TO job_attempts;

CREATE INDEX job_attempts_job ON job_attempts (job_id, attempt);

CREATE TABLE ingest_files_new (
    token       TEXT    PRIMARY KEY NOT NULL CHECK (typeof(token) = 'text'),
    job_id      INTEGER REFERENCES jobs(id) ON DELETE SET NULL
                CHECK (job_id IS NULL OR typeof(job_id) = 'integer'),
    watch       TEXT    NOT NULL CHECK (typeof(watch) = 'text'),
    name        TEXT    NOT NULL CHECK (typeof(name) = 'text'),
    sha256      TEXT    NOT NULL CHECK (typeof(sha256) = 'text' AND length(sha256) = 64),
    size        INTEGER NOT NULL CHECK (typeof(size) = 'integer' AND size >= 0),
    ingested_at INTEGER NOT NULL CHECK (typeof(ingested_at) = 'integer')
);

INSERT INTO ingest_files_new (token, job_id, watch, name, sha256, size, ingested_at)
    SELECT token, job_id, watch, name, sha256, size, ingested_at FROM ingest_files;

DROP TABLE ingest_files;
ALTER TABLE ingest_files_new RENAME TO ingest_files;

CREATE INDEX ingest_files_content ON ingest_files (sha256, name, ingested_at);
CREATE INDEX ingest_files_job ON ingest_files (job_id) WHERE job_id IS NOT NULL;

CREATE TABLE ingest_pending_new (
    watch       TEXT    NOT NULL CHECK (typeof(watch) = 'text'),
    folder      TEXT    NOT NULL CHECK (typeof(folder) = 'text'),
    first_seen  INTEGER NOT NULL CHECK (typeof(first_seen) = 'integer'),
    missing     TEXT    NOT NULL CHECK (typeof(missing) = 'text' AND json_valid(missing)),
    updated_at  INTEGER NOT NULL CHECK (typeof(updated_at) = 'integer'),
    PRIMARY KEY (watch, folder)
) WITHOUT ROWID;

INSERT INTO ingest_pending_new (watch, folder, first_seen, missing, updated_at)
    SELECT watch, folder, first_seen, missing, updated_at FROM ingest_pending;

DROP TABLE ingest_pending;
ALTER TABLE ingest_pending_new RENAME TO ingest_pending;

CREATE TABLE sync_state_new (
    pipeline             TEXT    PRIMARY KEY NOT NULL
                         CHECK (typeof(pipeline) = 'text' AND length(pipeline) > 0),
    high_water           INTEGER NOT NULL CHECK (typeof(high_water) = 'integer'),
    runs                 INTEGER NOT NULL DEFAULT 1 CHECK (typeof(runs) = 'integer' AND runs >= 1),
    last_run_items       INTEGER NOT NULL DEFAULT 0
                         CHECK (typeof(last_run_items) = 'integer' AND last_run_items >= 0),
    last_run_pages       INTEGER NOT NULL DEFAULT 0
                         CHECK (typeof(last_run_pages) = 'integer' AND last_run_pages >= 0),
    last_run_job         INTEGER CHECK (last_run_job IS NULL OR typeof(last_run_job) = 'integer'),
    updated_at           INTEGER NOT NULL CHECK (typeof(updated_at) = 'integer')
);

INSERT INTO sync_state_new (pipeline, high_water, runs, last_run_items, last_run_pages,
                            last_run_job, updated_at)
    SELECT pipeline, high_water, runs, last_run_items, last_run_pages, last_run_job, updated_at
    FROM sync_state;

DROP TABLE sync_state;
ALTER TABLE sync_state_new RENAME TO sync_state;
