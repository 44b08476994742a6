-- Crash recovery (issue 7): what each run changed, and who owns it.
-- journal: facts a run records before and after each destructive action (containers it
-- stops, databases it creates and renames, files it writes, connection settings), merged
-- key by key; recovery reads it and never guesses.
ALTER TABLE runs ADD COLUMN journal jsonb NOT NULL DEFAULT '{}';
-- owner/lease_until: the process executing the run and until when its lease holds; it is
-- renewed while the process lives, and an expired lease lets another process take over.
ALTER TABLE runs ADD COLUMN owner text;
ALTER TABLE runs ADD COLUMN lease_until timestamptz;
