-- The approval gate: when a request was escalated (set once, compare-and-set).
ALTER TABLE runs ADD COLUMN escalated_at timestamptz;
