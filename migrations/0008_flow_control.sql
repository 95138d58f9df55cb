-- jobd schema: flow control per destination (issue 18). Like 0004, no STRICT (SQLite
-- 3.34+ can still read the file): types are CHECKed. Every state test stays an OR chain
-- (see 0001), so the store's guards match the partial indexes.
--
-- * jobs.destination: the `[endpoints.NAME]` a job talks to, and jobs.flow_key the part
--   of it the job belongs to (a shop, a storefront; '' for the destination as a whole).
--   Derived by the job's kind when it is enqueued; NULL for a job under no flow control
--   (another kind, or a bare INSERT that did not name one).
-- * jobs.order_key: jobs with the same order key run one at a time, in id (enqueue)
--   order. jobs.order_blocked = 1 while an earlier job of its key is unfinished; only a
--   key's head has 0, and the claim's index leaves blocked rows out, so 100,000 keys
--   with long tails cost the claim nothing. The triggers below keep the flag for every
--   writer (the daemon, jobctl, a bare INSERT, an UPDATE by hand).
-- * destination_state: per destination and key, the hold (until when, the status and
--   reason that set it) and the token bucket a claim draws from (tokens left at
--   refilled_at). Jobs of a held destination are parked: their run_at is moved to the
--   hold's end, so the claim never walks them and they are charged nothing.
ALTER TABLE jobs ADD COLUMN destination TEXT
    CHECK (destination IS NULL
           OR (typeof(destination) = 'text' AND length(destination) BETWEEN 1 AND 200));
ALTER TABLE jobs ADD COLUMN flow_key TEXT NOT NULL DEFAULT ''
    CHECK (typeof(flow_key) = 'text' AND length(flow_key) <= 200);
ALTER TABLE jobs ADD COLUMN order_key TEXT
    CHECK (order_key IS NULL
           OR (typeof(order_key) = 'text' AND length(order_key) BETWEEN 1 AND 200));
ALTER TABLE jobs ADD COLUMN order_blocked INTEGER NOT NULL DEFAULT 0
    CHECK (order_blocked = 0 OR order_blocked = 1);

-- The claim's index (0006) without the rows waiting behind their order key's head.
DROP INDEX jobs_queue_ready;
CREATE INDEX jobs_queue_ready ON jobs (queue, priority DESC, run_at, id)
    WHERE (state = 'queued' OR state = 'retrying') AND order_blocked = 0;

-- A destination's waiting rows: parking and unparking them for a hold, and counting them.
CREATE INDEX jobs_destination_waiting ON jobs (destination, flow_key, run_at)
    WHERE (state = 'queued' OR state = 'retrying') AND destination IS NOT NULL;

-- The unfinished jobs of each order key: whether one exists, its head, the next in line.
CREATE INDEX jobs_order_live ON jobs (order_key, order_blocked, id)
    WHERE order_key IS NOT NULL
          AND (state = 'queued' OR state = 'running' OR state = 'retrying' OR state = 'waiting');

-- A job enqueued while an earlier job of its key is unfinished waits for it.
CREATE TRIGGER jobs_order_enqueue AFTER INSERT ON jobs
WHEN NEW.order_key IS NOT NULL AND (NEW.state = 'queued' OR NEW.state = 'retrying')
BEGIN
    UPDATE jobs SET order_blocked = 1
    WHERE id = NEW.id AND EXISTS (
        SELECT 1 FROM jobs AS earlier
        WHERE earlier.order_key = NEW.order_key AND earlier.id < NEW.id
          AND (earlier.state = 'queued' OR earlier.state = 'running'
               OR earlier.state = 'retrying' OR earlier.state = 'waiting'));
END;

-- When a key's job finishes (succeeded, dead, cancelled), the next one in line goes,
-- unless the key still has a head (a blocked job was cancelled).
CREATE TRIGGER jobs_order_finish AFTER UPDATE OF state ON jobs
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
CREATE TRIGGER jobs_order_revive AFTER UPDATE OF state ON jobs
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

-- A key's head deleted unfinished (jobctl delete): the next one of its key may go.
CREATE TRIGGER jobs_order_delete AFTER DELETE ON jobs
WHEN OLD.order_key IS NOT NULL AND OLD.order_blocked = 0
     AND (OLD.state = 'queued' OR OLD.state = 'running' OR OLD.state = 'retrying'
          OR OLD.state = 'waiting')
BEGIN
    UPDATE jobs SET order_blocked = 0
    WHERE id = (
        SELECT min(id) FROM jobs AS next
        WHERE next.order_key = OLD.order_key AND next.order_blocked = 1
          AND (next.state = 'queued' OR next.state = 'running'
               OR next.state = 'retrying' OR next.state = 'waiting'))
      AND NOT EXISTS (
        SELECT 1 FROM jobs AS head
        WHERE head.order_key = OLD.order_key AND head.order_blocked = 0
          AND (head.state = 'queued' OR head.state = 'running'
               OR head.state = 'retrying' OR head.state = 'waiting'));
END;

CREATE TABLE destination_state (
    destination TEXT    NOT NULL
                CHECK (typeof(destination) = 'text' AND length(destination) BETWEEN 1 AND 200),
    flow_key    TEXT    NOT NULL DEFAULT ''
                CHECK (typeof(flow_key) = 'text' AND length(flow_key) <= 200),
    held_until  INTEGER CHECK (held_until IS NULL OR typeof(held_until) = 'integer'),
    held_at     INTEGER CHECK (held_at IS NULL OR typeof(held_at) = 'integer'),
    hold_status INTEGER CHECK (hold_status IS NULL OR typeof(hold_status) = 'integer'),
    hold_reason TEXT    CHECK (hold_reason IS NULL OR typeof(hold_reason) = 'text'),
    tokens      REAL    CHECK (tokens IS NULL OR typeof(tokens) = 'real'
                               OR typeof(tokens) = 'integer'),
    refilled_at INTEGER CHECK (refilled_at IS NULL OR typeof(refilled_at) = 'integer'),
    updated_at  INTEGER NOT NULL CHECK (typeof(updated_at) = 'integer'),
    PRIMARY KEY (destination, flow_key)
) WITHOUT ROWID;
