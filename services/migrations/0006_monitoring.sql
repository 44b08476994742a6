-- Watching an environment after a successful rollback (issue 9, the runbook's "After
-- Rollback"): one row per run whose monitoring window was opened. The run itself is
-- finished (succeeded) and its environment free meanwhile; what the watch saw is in the
-- run's events (the audit log), this row says until when and who watches now.
-- owner/lease_until: a lease taken by compare-and-set and renewed while the watching
-- process lives (no advisory lock: a watch lasts minutes and must hold no connection,
-- nor the run's own lock, which undo and reporting take); an expired one is taken over.
CREATE TABLE monitors (
    run_id           text PRIMARY KEY REFERENCES runs (id),
    environment      text NOT NULL,
    started_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    until            timestamptz NOT NULL,
    interval_seconds double precision NOT NULL CHECK (interval_seconds > 0),
    owner            text,
    lease_until      timestamptz,
    ended_at         timestamptz,
    outcome          text,  -- healthy, degraded, superseded, unwatched
    line             text   -- the report's line ("Monitoring 10 min: healthy throughout")
);

CREATE INDEX monitors_open ON monitors (environment) WHERE ended_at IS NULL;
