-- Undo of a swap rollback is a run of its own, with its own audit trail.
ALTER TABLE runs DROP CONSTRAINT runs_kind_check;
ALTER TABLE runs ADD CONSTRAINT runs_kind_check CHECK (kind IN ('database', 'code', 'full', 'undo'));
