-- What `gridbus rebuild` needs besides the cases and clocks: the console's per-case
-- notification log (subject, detail, attempt of each finished delivery), a station
-- key's street, and when each API key was last used (the archiver copies it from Redis
-- every minute and when it stops: services/archiver/keyuse.py).
ALTER TABLE notifications ADD COLUMN subject text NOT NULL DEFAULT '';
ALTER TABLE notifications ADD COLUMN detail text NOT NULL DEFAULT '';
ALTER TABLE notifications ADD COLUMN attempt integer NOT NULL DEFAULT 1;
ALTER TABLE api_keys ADD COLUMN street text;
ALTER TABLE api_keys ADD COLUMN last_used_at timestamptz;
