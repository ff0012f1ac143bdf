-- Drift classes a verifying sync found (JSON []string); older rows have none.
ALTER TABLE ledger ADD COLUMN drift TEXT NOT NULL DEFAULT '[]';
