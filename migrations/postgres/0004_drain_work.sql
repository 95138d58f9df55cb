-- jobd PostgreSQL schema: less server work per job on the drain's hot path (issue 17).
-- Each job is inserted, claimed (an UPDATE), completed (an UPDATE) and given an attempt
-- row; this migration takes out the per-row work none of that needs.
--
-- * The order-key triggers of 0002 fired a PL/pgSQL call for every row inserted and for
--   every claim and completion, to return at once when the row has no order key. A WHEN
--   condition is evaluated before the trigger is queued, so rows without a key (nearly
--   all) no longer queue an event or enter PL/pgSQL at all. The functions are unchanged.
-- * job_attempts.job_id lost its foreign key: the check ran a query per attempt row that
--   also locked the job's row (FOR KEY SHARE: a WAL record and a dirtied page per job),
--   though every writer of attempt rows (completions, lease rescues, jobctl copy) writes
--   them for a job it has just updated or inserted in the same transaction. The
--   cascade stays: a statement trigger deletes the attempts of deleted jobs (one
--   statement per DELETE, not one per row). A job deleted while an attempt is written
--   waits for the writer's row lock, and the trigger's DELETE, which runs after it,
--   sees the attempt committed.

DROP TRIGGER jobs_order_enqueue ON jobs;
CREATE TRIGGER jobs_order_enqueue BEFORE INSERT ON jobs
    FOR EACH ROW WHEN (NEW.order_key IS NOT NULL)
    EXECUTE FUNCTION jobd_order_enqueue();

DROP TRIGGER jobs_order_state ON jobs;
CREATE TRIGGER jobs_order_state AFTER UPDATE OF state ON jobs
    FOR EACH ROW WHEN (NEW.order_key IS NOT NULL AND NEW.state IS DISTINCT FROM OLD.state)
    EXECUTE FUNCTION jobd_order_state();

DROP TRIGGER jobs_order_delete ON jobs;
CREATE TRIGGER jobs_order_delete AFTER DELETE ON jobs
    FOR EACH ROW WHEN (OLD.order_key IS NOT NULL)
    EXECUTE FUNCTION jobd_order_delete();

ALTER TABLE job_attempts DROP CONSTRAINT job_attempts_job_id_fkey;

CREATE FUNCTION jobd_delete_attempts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- An array, so the plan is an index scan of job_attempts_job whatever the
    -- transition table's size (it has no statistics).
    DELETE FROM job_attempts WHERE job_id = ANY (ARRAY(SELECT id FROM deleted));
    RETURN NULL;
END $$;

CREATE TRIGGER jobs_delete_attempts AFTER DELETE ON jobs
    REFERENCING OLD TABLE AS deleted FOR EACH STATEMENT EXECUTE FUNCTION jobd_delete_attempts();
