-- jobd schema, version 2: what the watched folders took in.
-- ingest_files: one row per file or folder set that became a job, keyed by the staging
-- token the watcher gave it before it left the input folder, so a crash between the
-- rename and the commit can never make two jobs of one file (the token is looked up
-- again on recovery). Also the dedupe index: the same (sha256, name) within the window
-- is not enqueued twice.
CREATE TABLE ingest_files (
    token       TEXT    PRIMARY KEY,
    job_id      INTEGER REFERENCES jobs(id) ON DELETE SET NULL,
    watch       TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    sha256      TEXT    NOT NULL CHECK (length(sha256) = 64),
    size        INTEGER NOT NULL CHECK (size >= 0),
    ingested_at INTEGER NOT NULL
) STRICT;

CREATE INDEX ingest_files_content ON ingest_files (sha256, name, ingested_at);
CREATE INDEX ingest_files_job ON ingest_files (job_id) WHERE job_id IS NOT NULL;

-- Folder sets still waiting for required files, so `jobctl stats` can show them and the
-- incomplete timeout counts from the first sighting across restarts.
CREATE TABLE ingest_pending (
    watch       TEXT    NOT NULL,
    folder      TEXT    NOT NULL,
    first_seen  INTEGER NOT NULL,
    missing     TEXT    NOT NULL CHECK (json_valid(missing)),
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (watch, folder)
) STRICT, WITHOUT ROWID;
