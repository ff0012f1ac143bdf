-- Drift classes a verifying sync found ([]string); older rows have none.
ALTER TABLE ledger ADD COLUMN drift json NOT NULL DEFAULT '[]';
