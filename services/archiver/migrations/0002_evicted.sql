-- Retention: when a finished case's document left Redis (CASE_HOT_DAYS after it was last
-- updated); the API then serves it from `cases.doc`.
ALTER TABLE cases ADD COLUMN evicted_at timestamptz;
CREATE INDEX cases_evictable ON cases (updated_at) WHERE final AND evicted_at IS NULL;
