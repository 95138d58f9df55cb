-- jobd schema 6: ready rows indexed by queue first (new index only; nothing existing
-- changes; no STRICT, see 0004). The claim seeks each queue it may take from and, inside
-- it, each priority's due range (run_at <= now): a queue that is paused or at its
-- concurrency limit costs one seek however many rows wait in it, and rows due later are
-- never walked. jobs_ready stays for readers that list ready jobs across queues.
-- The state test stays an OR chain (see 0001), so the claim's guard matches it.
CREATE INDEX jobs_queue_ready ON jobs (queue, priority DESC, run_at, id)
    WHERE (state = 'queued' OR state = 'retrying');
