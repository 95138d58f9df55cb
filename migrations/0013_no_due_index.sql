-- jobd schema: jobs_due goes (issue 15, targets 1 and 4; no STRICT, see 0004). It held every
-- ready row in run_at order, for the dispatcher's "when is the next waiting job due" and
-- for the readers that walk every ready row. Every enqueue, claim and retry wrote to it,
-- and while rows due later wait, each new row's entry lands inside the tree instead of at
-- its end, a seek from the root per row where an append costs one compare (counted: 6,000
-- to 9,700 instructions per drained job, docs/benchmarks.md, fourteenth session). The
-- next due time is read from jobs_queue_ready (one seek per queue and priority), and the
-- readers take ready rows from jobs_queue_ready and, behind their order key's head, from
-- jobs_order_live.
DROP INDEX jobs_due;
