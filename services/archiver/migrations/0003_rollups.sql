-- Roll-ups for reports over a year, a compact journal, clocks ordered by their own sequence.

-- sla numbers each commit of a case's clocks (ClocksRecorded.seq): the highest wins,
-- whatever order the records arrive in (committed_at, a wall clock, only breaks ties of
-- records made before the sequence existed). The history has its own: a commit that
-- only appended to it sends none.
ALTER TABLE clocks ADD COLUMN seq bigint NOT NULL DEFAULT 0;
ALTER TABLE clocks ADD COLUMN history_seq bigint NOT NULL DEFAULT 0;
ALTER TABLE clocks ADD COLUMN history_at double precision NOT NULL DEFAULT 0;
UPDATE clocks SET history_at = committed_at WHERE history IS NOT NULL;

-- Indicator counts summed per local month as the archiver takes them in (the increments
-- themselves stay in the journal's clocks_recorded / case_registered messages): a year
-- reads 12 months of these instead of millions of increment rows.
CREATE TABLE indicator_months (
    period  text   NOT NULL,
    scope   text   NOT NULL,
    key     text   NOT NULL,
    counter text   NOT NULL,
    n       bigint NOT NULL,
    PRIMARY KEY (period, scope, key, counter)
);
INSERT INTO indicator_months SELECT period, scope, key, counter, sum(n) FROM indicator_counts GROUP BY 1, 2, 3, 4;
DROP TABLE indicator_counts;

-- The ledger's columns that the summary needs (filled by the writer, or for rows archived
-- before this migration by services/archiver/rollup.refresh, which needs the time zone).
ALTER TABLE ledger ADD COLUMN day date;                 -- local day of breached_at
ALTER TABLE ledger ADD COLUMN liaison text;
ALTER TABLE ledger ADD COLUMN clock text;
ALTER TABLE ledger ADD COLUMN level integer;
ALTER TABLE ledger ADD COLUMN due double precision;
ALTER TABLE ledger ADD COLUMN done_at double precision; -- as ledger_ended, on the row
ALTER TABLE ledger ADD COLUMN late_tenths bigint;       -- once done: how late, in 0.1 s
-- the still-open entries, which a report measures one by one (late by now): covering, so
-- that a year's open entries are read from the index alone
CREATE INDEX ledger_open ON ledger (breached_at) INCLUDE (dept, street, liaison, due) WHERE done_at IS NULL;
CREATE INDEX ledger_case ON ledger (case_id);

-- The ledger summed per local day and per local month (grain 'd' / 'm', bucket = the day
-- or the month's first day) and department, street and liaison. Closed entries carry
-- their lateness; open ones are late by "now", which the report measures per row.
CREATE TABLE ledger_rollup (
    grain           char(1) NOT NULL,
    bucket          date    NOT NULL,
    dept            text    NOT NULL,
    street          text    NOT NULL,
    liaison         text    NOT NULL,
    breaches        integer NOT NULL,
    acknowledge     integer NOT NULL,
    handle          integer NOT NULL,
    escalation      integer NOT NULL,
    min_level       integer NOT NULL,
    closed          integer NOT NULL,
    closed_late     bigint  NOT NULL,
    closed_late_max bigint  NOT NULL,
    first_at        double precision NOT NULL,   -- the earliest entry (ties in the liaison list)
    first_id        text COLLATE "C" NOT NULL,
    PRIMARY KEY (grain, bucket, dept, street, liaison)
);

-- Distinct cases over any run of days: an entry counts its case in a period when the
-- case's previous entry in the same group (scope 'd': department; 'l': department,
-- street, liaison) lies before the period's first day. So per bucket: how many entries
-- have their previous one on `prev_day` ('-infinity': none).
CREATE TABLE ledger_firsts (
    grain    char(1) NOT NULL,
    bucket   date    NOT NULL,
    scope    char(1) NOT NULL,
    dept     text    NOT NULL,
    street   text    NOT NULL,
    liaison  text    NOT NULL,
    prev_day date    NOT NULL,
    n        integer NOT NULL,
    PRIMARY KEY (grain, bucket, scope, dept, street, liaison, prev_day)
);

-- The time zone the roll-ups' days were cut in (refresh() recomputes them when it changes).
CREATE TABLE rollup_state (
    id       boolean PRIMARY KEY DEFAULT true CHECK (id),
    timezone text NOT NULL
);

-- The journal keeps what no other table holds: its columns carry the envelope, the body
-- the rest without nulls, empty values or copies of rows stored elsewhere
-- (services/archiver/journal.py; `journal.expand` gives the message back).
UPDATE journal SET body = jsonb_strip_nulls(body) - 'message_id' - 'case_id' - 'event' - 'kind' - 'occurred_at';
UPDATE journal SET body = body - 'schema_version' WHERE body->>'schema_version' = '1';
UPDATE journal SET body = body - 'case' WHERE kind LIKE 'case\_%' AND kind <> 'case_recorded';
UPDATE journal SET body = body - 'ledger' - 'ledger_ended' WHERE kind = 'clocks_recorded';
UPDATE journal SET body = jsonb_strip_nulls(jsonb_build_object('version', body->'version',
    'idempotency_key', body->'idempotency_key')) WHERE kind = 'case_recorded';
UPDATE journal SET body = '{}'::jsonb WHERE kind IN ('notification_sent', 'dispatch_order');
DROP INDEX journal_time;
CREATE INDEX journal_registered ON journal (occurred_at) WHERE kind = 'case_registered';
