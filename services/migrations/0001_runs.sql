-- Runs, approvals and their events: the audit log of every rollback.
CREATE TABLE runs (
    id            text PRIMARY KEY,
    environment   text NOT NULL,
    kind          text NOT NULL CHECK (kind IN ('database', 'code', 'full')),
    status        text NOT NULL,
    requested_by  text NOT NULL,
    requested_at  timestamptz NOT NULL DEFAULT now(),
    started_at    timestamptz,
    finished_at   timestamptz,
    backup_name   text,
    backup_sha256 text,
    strategy      text,
    current_step  text,
    plan          jsonb NOT NULL DEFAULT '{}',
    result        jsonb,
    slack_channel text,
    slack_ts      text,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- At most one active run per environment, whichever process asks.
CREATE UNIQUE INDEX runs_one_active_per_environment ON runs (environment)
    WHERE status IN ('pending', 'awaiting_approval', 'approved', 'running');

CREATE INDEX runs_by_environment ON runs (environment, requested_at DESC);

CREATE TABLE run_events (
    id      bigserial PRIMARY KEY,
    run_id  text NOT NULL REFERENCES runs (id),
    at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    kind    text NOT NULL,
    step    text,
    actor   text,
    detail  jsonb NOT NULL DEFAULT '{}'
);

CREATE INDEX run_events_by_run ON run_events (run_id, id);

CREATE TABLE approvals (
    run_id    text NOT NULL REFERENCES runs (id),
    user_id   text NOT NULL,
    decision  text NOT NULL CHECK (decision IN ('approve', 'reject')),
    plan_hash text NOT NULL,
    at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (run_id, user_id, plan_hash)
);
