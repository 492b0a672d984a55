-- The archive (DESIGN §11): the complete record, one row per message, and the tables
-- derived from it that reports and `gridbus rebuild` read.

-- Every message the archiver took in, once (its message id): the idempotency of the
-- archive and the record auditors read. Reporters' phone numbers never get here (the
-- case documents carry none; see services/archiver/record.py).
CREATE TABLE journal (
    message_id  text PRIMARY KEY,
    kind        text        NOT NULL,
    case_id     text,
    occurred_at timestamptz NOT NULL,
    archived_at timestamptz NOT NULL DEFAULT now(),
    body        jsonb       NOT NULL
);
CREATE INDEX journal_case ON journal (case_id, occurred_at);
CREATE INDEX journal_time ON journal (occurred_at);

-- The latest version of every case intake stored (its whole document), with the columns
-- reports filter on.
CREATE TABLE cases (
    case_id         text PRIMARY KEY,
    version         integer     NOT NULL,
    report_id       text        NOT NULL,
    idempotency_key text,
    status          text        NOT NULL,
    category        text        NOT NULL,
    severity        text        NOT NULL,
    grid            text        NOT NULL,
    street          text        NOT NULL,
    registered_at   timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    final           boolean     NOT NULL,
    resolution_mode text,
    resolved_at     timestamptz,
    duplicate_of    text,
    doc             jsonb       NOT NULL
);
CREATE INDEX cases_by_time ON cases (registered_at, case_id);
CREATE INDEX cases_hot ON cases (final, updated_at);
CREATE INDEX cases_street ON cases (street, registered_at);

CREATE TABLE case_timeline (
    case_id       text        NOT NULL REFERENCES cases ON DELETE CASCADE,
    seq           integer     NOT NULL,
    at            timestamptz NOT NULL,
    actor         text        NOT NULL,
    action        text        NOT NULL,
    from_status   text,
    to_status     text,
    note          text        NOT NULL DEFAULT '',
    evidence_urls jsonb       NOT NULL DEFAULT '[]',
    message_id    text,
    PRIMARY KEY (case_id, seq)
);

CREATE TABLE case_assignments (
    case_id         text        NOT NULL REFERENCES cases ON DELETE CASCADE,
    seq             integer     NOT NULL,
    order_id        text        NOT NULL,
    dept            text        NOT NULL,
    street          text        NOT NULL,
    level           integer     NOT NULL,
    route           text        NOT NULL,
    sla_policy      text        NOT NULL,
    mode            text        NOT NULL,
    dispatched_at   timestamptz NOT NULL,
    ack_due         timestamptz,
    handle_due      timestamptz,
    active          boolean     NOT NULL,
    acknowledged_at timestamptz,
    resolved_at     timestamptz,
    rejected_reason text,
    PRIMARY KEY (case_id, seq)
);
CREATE INDEX case_assignments_dept ON case_assignments (dept);

-- Dispatch orders as the departments received them (gridbus.dispatch).
CREATE TABLE orders (
    message_id  text PRIMARY KEY,
    order_id    text        NOT NULL,
    case_id     text        NOT NULL,
    dept        text        NOT NULL,
    street      text        NOT NULL,
    level       integer     NOT NULL,
    ack_due     timestamptz,
    handle_due  timestamptz,
    occurred_at timestamptz NOT NULL
);
CREATE INDEX orders_case ON orders (case_id);

-- sla's clock document of each case (services/sla/codec.py), the latest commit wins.
CREATE TABLE clocks (
    case_id      text PRIMARY KEY,
    committed_at double precision NOT NULL,
    live         boolean          NOT NULL,
    doc          bytea            NOT NULL,
    history      bytea
);

-- The accountability ledger (services/sla/ledger.py): one row per missed deadline.
CREATE TABLE ledger (
    breach_id   text PRIMARY KEY,
    case_id     text             NOT NULL,
    dept        text             NOT NULL,
    street      text             NOT NULL,
    breached_at double precision NOT NULL,
    body        jsonb            NOT NULL
);
CREATE INDEX ledger_time ON ledger (breached_at);
CREATE TABLE ledger_ended (
    breach_id text PRIMARY KEY,
    done_at   double precision NOT NULL
);

-- Indicator counts (services/sla/indicators.py) as sla committed them, one row per
-- increment, with the local month it counts in.
CREATE TABLE indicator_counts (
    message_id text    NOT NULL,
    idx        integer NOT NULL,
    period     text    NOT NULL,
    scope      text    NOT NULL,
    key        text    NOT NULL,
    counter    text    NOT NULL,
    n          integer NOT NULL,
    PRIMARY KEY (message_id, idx)
);
CREATE INDEX indicator_counts_period ON indicator_counts (period);

-- Notifications that went out (or were given up): the notifier's done-markers.
CREATE TABLE notifications (
    delivery_id text PRIMARY KEY,
    case_id     text        NOT NULL,
    event       text        NOT NULL,
    channel     text        NOT NULL,
    recipient   text        NOT NULL,
    outcome     text        NOT NULL,
    finished_at timestamptz NOT NULL
);
CREATE INDEX notifications_case ON notifications (case_id);

-- API keys of intake's HTTP API: the hash of the secret, never the secret.
CREATE TABLE api_keys (
    key_id        text PRIMARY KEY,
    role          text        NOT NULL,
    dept          text,
    name          text        NOT NULL DEFAULT '',
    secret_sha256 text,
    created_at    timestamptz NOT NULL,
    revoked_at    timestamptz
);
