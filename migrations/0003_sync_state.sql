-- Pipelines' sync state: per pipeline, the high-water mark of its last complete run (the
-- time that run started) and what the run fetched. Written only in the completion
-- transaction of a run's last page; deleting a row makes the next run a full sync.

CREATE TABLE sync_state (
    pipeline             TEXT    PRIMARY KEY CHECK (length(pipeline) > 0),
    high_water           INTEGER NOT NULL,
    runs                 INTEGER NOT NULL DEFAULT 1 CHECK (runs >= 1),
    last_run_items       INTEGER NOT NULL DEFAULT 0 CHECK (last_run_items >= 0),
    last_run_pages       INTEGER NOT NULL DEFAULT 0 CHECK (last_run_pages >= 0),
    last_run_job         INTEGER,
    updated_at           INTEGER NOT NULL
) STRICT;
