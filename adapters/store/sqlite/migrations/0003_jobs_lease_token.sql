-- Fencing tokens: each lease of a job gets a fresh token (owner#nonce.n),
-- and every later write for the job names it. lease_owner stays the owner,
-- so Release(owner) is an exact match. Leases taken before this migration
-- have no token: they can only expire or be released.
ALTER TABLE jobs ADD COLUMN lease_token TEXT;
