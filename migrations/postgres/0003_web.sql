-- jobd PostgreSQL schema: what the web page (issue 19) reads fast on a big table, and
-- the counter its live event stream watches.
--
-- * jobd_changes: moved by every statement that changed a row of a table the page
--   shows (jobs, queue pauses, destination holds, pipelines' sync state, incomplete
--   folder sets), whoever wrote it (the daemons, jobctl, psql). The page's change
--   watcher compares its value, as it compares SQLite's `PRAGMA data_version`. A
--   sequence, so writers never wait on each other for it; a statement that changed no
--   row does not move it (an idle daemon's empty claims and rescues), so an open page
--   idles too. It moves when the statement runs, not at commit (see docs/web.md).
-- * jobs_waiting: the overview counts waiting jobs per queue and the Jobs page lists
--   them without reading the whole table.
-- * jobs_web_actions: the rows that record web page actions, by their key in byte
--   order (the keys sort by time; "C" so the range holds under any database collation).

CREATE SEQUENCE jobd_changes;

CREATE FUNCTION jobd_note_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM changed) THEN
        PERFORM nextval('jobd_changes');
    END IF;
    RETURN NULL;
END $$;

-- A trigger with a transition table takes one event, so each table has three.
CREATE TRIGGER jobs_changes_insert AFTER INSERT ON jobs
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION jobd_note_change();
CREATE TRIGGER jobs_changes_update AFTER UPDATE ON jobs
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION jobd_note_change();
CREATE TRIGGER jobs_changes_delete AFTER DELETE ON jobs
    REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION jobd_note_change();

CREATE TRIGGER queue_pauses_changes_insert AFTER INSERT ON queue_pauses
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION jobd_note_change();
CREATE TRIGGER queue_pauses_changes_update AFTER UPDATE ON queue_pauses
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION jobd_note_change();
CREATE TRIGGER queue_pauses_changes_delete AFTER DELETE ON queue_pauses
    REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION jobd_note_change();

CREATE TRIGGER destination_state_changes_insert AFTER INSERT ON destination_state
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION jobd_note_change();
CREATE TRIGGER destination_state_changes_update AFTER UPDATE ON destination_state
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION jobd_note_change();
CREATE TRIGGER destination_state_changes_delete AFTER DELETE ON destination_state
    REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION jobd_note_change();

CREATE TRIGGER sync_state_changes_insert AFTER INSERT ON sync_state
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION jobd_note_change();
CREATE TRIGGER sync_state_changes_update AFTER UPDATE ON sync_state
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION jobd_note_change();
CREATE TRIGGER sync_state_changes_delete AFTER DELETE ON sync_state
    REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION jobd_note_change();

CREATE TRIGGER ingest_pending_changes_insert AFTER INSERT ON ingest_pending
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION jobd_note_change();
CREATE TRIGGER ingest_pending_changes_update AFTER UPDATE ON ingest_pending
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION jobd_note_change();
CREATE TRIGGER ingest_pending_changes_delete AFTER DELETE ON ingest_pending
    REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION jobd_note_change();

CREATE INDEX jobs_waiting ON jobs (queue) WHERE state = 'waiting';

CREATE INDEX jobs_web_actions ON jobs ((unique_key COLLATE "C")) WHERE kind = 'web_action';
