-- The saga log: every saga's kind, params, progress and owner, so that a
-- control plane that dies resumes or unwinds what it had in flight. Only
-- SQL that CockroachDB also runs.

-- +goose Up
CREATE TABLE saga (
    id           UUID PRIMARY KEY,
    kind         TEXT NOT NULL CONSTRAINT saga_kind_present CHECK (kind <> ''),
    instance_id  UUID NULL CONSTRAINT saga_instance_fk REFERENCES instance (id),
    params       JSONB NOT NULL,
    data         JSONB NOT NULL,
    state        TEXT NOT NULL CONSTRAINT saga_state_known
        CHECK (state IN ('running', 'unwinding', 'done', 'unwound', 'stuck')),
    -- Running: the next step to do; unwinding: the next to undo (-1: none).
    step         INT8 NOT NULL CONSTRAINT saga_step_from_minus_one CHECK (step >= -1),
    step_states  TEXT[] NOT NULL,
    error        TEXT NOT NULL,
    owner_id     UUID NULL,
    lease_until  TIMESTAMPTZ NOT NULL,
    time_created TIMESTAMPTZ NOT NULL,
    time_updated TIMESTAMPTZ NOT NULL,
    CONSTRAINT saga_step_within CHECK (step <= array_length(step_states, 1)),
    CONSTRAINT saga_error_when_unwound CHECK (state NOT IN ('unwinding', 'unwound', 'stuck') OR error <> '')
);

-- The sagas an executor may claim.
CREATE INDEX saga_in_flight ON saga (lease_until) WHERE state IN ('running', 'unwinding');
CREATE INDEX saga_of_instance ON saga (instance_id, time_created);

-- +goose Down
DROP TABLE saga;
