-- jobd schema: the two order-key triggers on UPDATE OF finished_at (0010) become one
-- (issue 15, target 1; no STRICT, see 0004). SQLite runs a trigger program per row for
-- every trigger on a column the update sets, WHEN or not, so a job finishing ran two:
-- now one, whose WHEN (no order key, the common case) stops it at once. Its two
-- statements are the bodies of 0010, each behind its own old WHEN: a job finishing lets
-- the next one of its key go, a finished job sent round again waits behind its key's
-- head; no row is both, so their order does not matter.
DROP TRIGGER jobs_order_finish;
DROP TRIGGER jobs_order_revive;

CREATE TRIGGER jobs_order_finish_or_revive AFTER UPDATE OF finished_at ON jobs
WHEN NEW.order_key IS NOT NULL
BEGIN
    -- A key's job finishes (succeeded, dead, cancelled): the next one in line goes,
    -- unless the key still has a head (a blocked job was cancelled).
    UPDATE jobs SET order_blocked = 0
    WHERE (NEW.state = 'succeeded' OR NEW.state = 'dead' OR NEW.state = 'cancelled')
      AND NOT (OLD.state = 'succeeded' OR OLD.state = 'dead' OR OLD.state = 'cancelled')
      AND id = (
        SELECT min(id) FROM jobs AS next
        WHERE next.order_key = NEW.order_key AND next.order_blocked = 1
          AND (next.state = 'queued' OR next.state = 'running'
               OR next.state = 'retrying' OR next.state = 'waiting'))
      AND NOT EXISTS (
        SELECT 1 FROM jobs AS head
        WHERE head.order_key = NEW.order_key AND head.order_blocked = 0
          AND (head.state = 'queued' OR head.state = 'running'
               OR head.state = 'retrying' OR head.state = 'waiting'));
    -- A finished job sent round again (jobctl retry) waits if its key has a head already.
    UPDATE jobs SET order_blocked = 1
    WHERE (NEW.state = 'queued' OR NEW.state = 'retrying')
      AND (OLD.state = 'succeeded' OR OLD.state = 'dead' OR OLD.state = 'cancelled')
      AND id = NEW.id AND EXISTS (
        SELECT 1 FROM jobs AS head
        WHERE head.order_key = NEW.order_key AND head.id <> NEW.id AND head.order_blocked = 0
          AND (head.state = 'queued' OR head.state = 'running'
               OR head.state = 'retrying' OR head.state = 'waiting'));
END;
