-- The archiver reads the record from the stream `gridbus.audit` (no queue of its own):
-- the offset of the last stream message it has written, stored in the same transaction
-- as that message's rows, so that a restart resumes at written_to + 1 and a crash at any
-- point neither loses a message nor writes one twice (services/archiver/offsets.py).
-- last_occurred_at is the newest `occurred_at` of what was written (the archive's lag).
CREATE TABLE stream_offsets (
    stream text PRIMARY KEY,
    written_to bigint NOT NULL,
    last_occurred_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now()
);
