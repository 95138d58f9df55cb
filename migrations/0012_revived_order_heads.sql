-- jobd schema: a finished job sent round again becomes its order key's head when the key
-- has none (no STRICT, see 0004). The trigger of 0011 only ever set order_blocked to 1 on
-- the way back: a job cancelled while it waited behind its head kept order_blocked = 1,
-- and sent round again after its key's other jobs had finished it waited for a head that
-- no longer existed, never to be claimed. (PostgreSQL's trigger sets the flag both ways;
-- this makes SQLite's the same.) The finishing half is 0011's, unchanged.
DROP TRIGGER jobs_order_finish_or_revive;

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
    -- A finished job sent round again (jobctl retry) waits if its key has a head
    -- already, and is the head if not.
    UPDATE jobs SET order_blocked = EXISTS (
        SELECT 1 FROM jobs AS head
        WHERE head.order_key = NEW.order_key AND head.id <> NEW.id AND head.order_blocked = 0
          AND (head.state = 'queued' OR head.state = 'running'
               OR head.state = 'retrying' OR head.state = 'waiting'))
    WHERE (NEW.state = 'queued' OR NEW.state = 'retrying')
      AND (OLD.state = 'succeeded' OR OLD.state = 'dead' OR OLD.state = 'cancelled')
      AND id = NEW.id;
END;

-- Jobs the old trigger stranded: a key with unfinished jobs and no head gets its first
-- one in id order as its head.
UPDATE jobs SET order_blocked = 0
WHERE id IN (
    SELECT min(id) FROM jobs
    WHERE order_key IS NOT NULL
      AND (state = 'queued' OR state = 'running' OR state = 'retrying' OR state = 'waiting')
    GROUP BY order_key
    HAVING max(order_blocked = 0) = 0);
