-- The training jobs of service/pg_jobs.py: one row per job, the same fields as the SQLite queue's (service/jobs.py),
-- plus the dataset (bytes of an .npz) and the tail of train.log, so that any host can run the job and any replica
-- can show it. Times are epoch seconds of the database's clock: runners on hosts whose clocks differ still agree
-- on how old a heartbeat is.
CREATE TABLE lstm_jobs (
    id text PRIMARY KEY,
    seq bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    status text NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    created_at double precision NOT NULL,
    started_at double precision,
    finished_at double precision,
    model text NOT NULL,
    preset text NOT NULL,
    promote text NOT NULL,
    params jsonb NOT NULL,
    dataset jsonb,
    dataset_npz bytea,
    epoch integer NOT NULL DEFAULT 0,
    max_epochs integer NOT NULL,
    loss double precision,
    result jsonb,
    error text,
    owner text,
    heartbeat_at double precision,
    cancel_requested boolean NOT NULL DEFAULT false,
    log_tail text
);
CREATE INDEX lstm_jobs_by_status ON lstm_jobs (status, seq);
CREATE INDEX lstm_jobs_by_owner ON lstm_jobs (owner, status);
