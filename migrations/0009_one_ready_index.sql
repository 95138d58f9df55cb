-- jobd schema: one index fewer to keep up for every job (issue 15, target 1; nothing
-- else changes; no STRICT, see 0004). jobs_ready (priority DESC, run_at, id over ready
-- rows) was the claim's index until 0006; the claim now seeks jobs_queue_ready, and the
-- readers that walk every ready row across queues (the web page's search by state, the
-- overview's counts) read jobs_due, which holds the same rows in run_at order. Every
-- enqueue, claim and retry wrote to both; now only to jobs_due.
DROP INDEX jobs_ready;
