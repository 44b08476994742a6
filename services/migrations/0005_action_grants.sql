-- Gated actions (undo, resume, abort) need the same approvals as the rollback: the
-- approvals table holds them (plan_hash = '<action>:<run id>'); a grant row is inserted
-- once, by whichever click completes them, so exactly one caller performs the action.
CREATE TABLE action_grants (
    subject    text PRIMARY KEY,
    run_id     text NOT NULL REFERENCES runs (id),
    granted_by text NOT NULL,
    at         timestamptz NOT NULL DEFAULT clock_timestamp()
);
