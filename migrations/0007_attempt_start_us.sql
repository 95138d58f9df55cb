-- jobd schema: when each attempt's handler started, in microseconds since the Unix epoch
-- (job_attempts.started_at keeps its milliseconds), so pickup latency below a
-- millisecond can be read from outside. NULL for attempts recorded before this, or whose
-- handler never started. Like 0004, no STRICT: the type is CHECKed.
ALTER TABLE job_attempts ADD COLUMN started_us INTEGER
    CHECK (started_us IS NULL OR typeof(started_us) = 'integer');
