-- jobd PostgreSQL schema: flow control per destination (issue 18), the counterpart of
-- SQLite's migration 0008 with the same columns, CHECKs and meaning.
--
-- * jobs.destination / jobs.flow_key: the `[endpoints.NAME]` a job talks to and the part
--   of it the job belongs to ('' for the destination as a whole); NULL destination: no
--   flow control.
-- * jobs.order_key: jobs with the same key run one at a time, in id order;
--   jobs.order_blocked is true while an earlier unfinished job of the key exists. The
--   triggers below keep it for every writer (the daemons, jobctl, psql). Each takes a
--   transaction advisory lock on the key, so two daemons enqueueing or finishing jobs
--   of one key at once cannot both let a job through.
-- * destination_state: per destination and key, the hold and the token bucket. Claims
--   lock a destination's row (SELECT ... FOR UPDATE) while they draw its tokens and
--   count its running jobs, so limits hold across daemons.
ALTER TABLE jobs ADD COLUMN destination text
    CHECK (destination IS NULL OR length(destination) BETWEEN 1 AND 200);
ALTER TABLE jobs ADD COLUMN flow_key text NOT NULL DEFAULT ''
    CHECK (length(flow_key) <= 200);
ALTER TABLE jobs ADD COLUMN order_key text
    CHECK (order_key IS NULL OR length(order_key) BETWEEN 1 AND 200);
ALTER TABLE jobs ADD COLUMN order_blocked boolean NOT NULL DEFAULT false;

-- The claim's indexes without the rows waiting behind their order key's head.
DROP INDEX jobs_queue_ready;
CREATE INDEX jobs_queue_ready ON jobs (queue, priority DESC, run_at, id)
    WHERE state IN ('queued', 'retrying') AND NOT order_blocked;
DROP INDEX jobs_ready;
CREATE INDEX jobs_ready ON jobs (priority DESC, run_at, id)
    WHERE state IN ('queued', 'retrying') AND NOT order_blocked;

CREATE INDEX jobs_destination_waiting ON jobs (destination, flow_key, run_at)
    WHERE state IN ('queued', 'retrying') AND destination IS NOT NULL;
CREATE INDEX jobs_destination_running ON jobs (destination, flow_key)
    WHERE state = 'running' AND destination IS NOT NULL;
CREATE INDEX jobs_order_live ON jobs (order_key, order_blocked, id)
    WHERE order_key IS NOT NULL AND state IN ('queued', 'running', 'retrying', 'waiting');

-- Serialises every change to one order key's line across connections.
CREATE FUNCTION jobd_lock_order_key(key text) RETURNS void LANGUAGE sql VOLATILE AS
    $$ SELECT pg_advisory_xact_lock(1785684587, hashtext(key)) $$;

-- Unblocks the next job of `key` in id order, unless the key still has a head.
CREATE FUNCTION jobd_order_advance(key text) RETURNS void LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM jobs WHERE order_key = key AND NOT order_blocked
                   AND state IN ('queued', 'running', 'retrying', 'waiting')) THEN
        UPDATE jobs SET order_blocked = false
        WHERE id = (SELECT min(id) FROM jobs WHERE order_key = key AND order_blocked
                    AND state IN ('queued', 'running', 'retrying', 'waiting'));
    END IF;
END $$;

-- A job enqueued while an unfinished job of its key exists waits for it (rows inserted
-- earlier by the same statement are visible here: a batch lines up in id order).
CREATE FUNCTION jobd_order_enqueue() RETURNS trigger LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF NEW.order_key IS NOT NULL AND NEW.state IN ('queued', 'retrying') THEN
        PERFORM jobd_lock_order_key(NEW.order_key);
        NEW.order_blocked := EXISTS (
            SELECT 1 FROM jobs WHERE order_key = NEW.order_key
              AND state IN ('queued', 'running', 'retrying', 'waiting'));
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER jobs_order_enqueue BEFORE INSERT ON jobs
    FOR EACH ROW EXECUTE FUNCTION jobd_order_enqueue();

-- A job that finishes lets the next one of its key go; a finished one sent round again
-- waits if its key has a head already.
CREATE FUNCTION jobd_order_state() RETURNS trigger LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF NEW.order_key IS NULL OR NEW.state = OLD.state THEN
        RETURN NULL;
    END IF;
    IF NEW.state IN ('succeeded', 'dead', 'cancelled')
       AND OLD.state NOT IN ('succeeded', 'dead', 'cancelled') THEN
        PERFORM jobd_lock_order_key(NEW.order_key);
        PERFORM jobd_order_advance(NEW.order_key);
    ELSIF NEW.state IN ('queued', 'retrying')
          AND OLD.state IN ('succeeded', 'dead', 'cancelled') THEN
        PERFORM jobd_lock_order_key(NEW.order_key);
        UPDATE jobs SET order_blocked = EXISTS (
            SELECT 1 FROM jobs AS head WHERE head.order_key = NEW.order_key
              AND head.id <> NEW.id AND NOT head.order_blocked
              AND head.state IN ('queued', 'running', 'retrying', 'waiting'))
        WHERE id = NEW.id;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER jobs_order_state AFTER UPDATE OF state ON jobs
    FOR EACH ROW EXECUTE FUNCTION jobd_order_state();

-- A key's head deleted unfinished (jobctl delete): the next one of its key may go.
CREATE FUNCTION jobd_order_delete() RETURNS trigger LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF OLD.order_key IS NOT NULL AND NOT OLD.order_blocked
       AND OLD.state IN ('queued', 'running', 'retrying', 'waiting') THEN
        PERFORM jobd_lock_order_key(OLD.order_key);
        PERFORM jobd_order_advance(OLD.order_key);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER jobs_order_delete AFTER DELETE ON jobs
    FOR EACH ROW EXECUTE FUNCTION jobd_order_delete();

CREATE TABLE destination_state (
    destination text   NOT NULL CHECK (length(destination) BETWEEN 1 AND 200),
    flow_key    text   NOT NULL DEFAULT '' CHECK (length(flow_key) <= 200),
    held_until  bigint,
    held_at     bigint,
    hold_status integer,
    hold_reason text,
    tokens      double precision,
    refilled_at bigint,
    updated_at  bigint NOT NULL,
    PRIMARY KEY (destination, flow_key)
);
