-- jobd schema: the order-key triggers of 0008 that watch a job finishing or coming back
-- fire on UPDATE OF finished_at instead of UPDATE OF state (issue 15, target 1; no
-- STRICT, see 0004). The CHECK of 0004 ties finished_at to the finished states, so every
-- update that moves a row into or out of succeeded | dead | cancelled names finished_at,
-- whoever writes it (the daemon, jobctl, an UPDATE by hand): the triggers still see
-- every such move. The claim (queued | retrying -> running) and the other moves between
-- unfinished states do not name it, so they no longer run two trigger programs per row
-- whose WHEN can never hold for them. The bodies and WHEN clauses are those of 0008.
DROP TRIGGER jobs_order_finish;
DROP TRIGGER jobs_order_revive;

-- When a key's job finishes (succeeded, dead, cancelled), the next one in line goes,
-- unless the key still has a head (a blocked job was cancelled).
CREATE TRIGGER jobs_order_finish AFTER UPDATE OF finished_at ON jobs
WHEN NEW.order_key IS NOT NULL
     AND (NEW.state = 'succeeded' OR NEW.state = 'dead' OR NEW.state = 'cancelled')
     AND NOT (OLD.state = 'succeeded' OR OLD.state = 'dead' OR OLD.state = 'cancelled')
BEGIN
    UPDATE jobs SET order_blocked = 0
    WHERE id = (
        SELECT min(id) FROM jobs AS next
        WHERE next.order_key = NEW.order_key AND next.order_blocked = 1
          AND (next.state = 'queued' OR next.state = 'running'
               OR next.state = 'retrying' OR next.state = 'waiting'))
      AND NOT EXISTS (
        SELECT 1 FROM jobs AS head
        WHERE head.order_key = NEW.order_key AND head.order_blocked = 0
          AND (head.state = 'queued' OR head.state = 'running'
               OR head.state = 'retrying' OR head.state = 'waiting'));
END;

-- A finished job sent round again (jobctl retry) waits if its key has a head already.
CREATE TRIGGER jobs_order_revive AFTER UPDATE OF finished_at ON jobs
WHEN NEW.order_key IS NOT NULL AND (NEW.state = 'queued' OR NEW.state = 'retrying')
     AND (OLD.state = 'succeeded' OR OLD.state = 'dead' OR OLD.state = 'cancelled')
BEGIN
    UPDATE jobs SET order_blocked = 1
    WHERE id = NEW.id AND EXISTS (
        SELECT 1 FROM jobs AS head
        WHERE head.order_key = NEW.order_key AND head.id <> NEW.id AND head.order_blocked = 0
          AND (head.state = 'queued' OR head.state = 'running'
               OR head.state = 'retrying' OR head.state = 'waiting'));
END;
