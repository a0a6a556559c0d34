-- The fleet's records: sleds, instances, their VMMs and migrations, and the
-- sled resources a VMM holds while it can still run. Every constraint is
-- named, so that a refusal says which invariant it is. Only SQL that
-- CockroachDB also runs: no triggers, functions, sequences or SERIAL.

-- +goose Up
CREATE TABLE sled (
    id           UUID PRIMARY KEY,
    address      TEXT NOT NULL CONSTRAINT sled_address_present CHECK (address <> ''),
    api_versions TEXT[] NOT NULL,
    cpus         INT8 NOT NULL CONSTRAINT sled_cpus_positive CHECK (cpus > 0),
    memory_mib   INT8 NOT NULL CONSTRAINT sled_memory_positive CHECK (memory_mib > 0),
    state        TEXT NOT NULL CONSTRAINT sled_state_known CHECK (state IN ('active', 'lost')),
    time_created TIMESTAMPTZ NOT NULL,
    last_contact TIMESTAMPTZ NOT NULL
);

CREATE TABLE instance (
    id              UUID PRIMARY KEY,
    name            TEXT NOT NULL CONSTRAINT instance_name_present CHECK (name <> ''),
    description     TEXT NOT NULL,
    spec_version    TEXT NOT NULL CONSTRAINT instance_spec_version_present CHECK (spec_version <> ''),
    spec            JSONB NOT NULL,
    cpus            INT8 NOT NULL CONSTRAINT instance_cpus_positive CHECK (cpus > 0),
    memory_mib      INT8 NOT NULL CONSTRAINT instance_memory_positive CHECK (memory_mib > 0),
    time_created    TIMESTAMPTZ NOT NULL,
    state           TEXT NOT NULL CONSTRAINT instance_state_known
        CHECK (state IN ('creating', 'no_vmm', 'vmm', 'failed', 'destroyed')),
    gen             INT8 NOT NULL CONSTRAINT instance_gen_positive CHECK (gen >= 1),
    time_updated    TIMESTAMPTZ NOT NULL,
    active_vmm_id   UUID NULL,
    target_vmm_id   UUID NULL,
    migration_id    UUID NULL,
    failure_kind    TEXT NULL,
    failure_message TEXT NULL,
    -- The saga lock: the saga that holds the instance, and the lock's own
    -- generation.
    updater_id      UUID NULL,
    updater_gen     INT8 NOT NULL DEFAULT 0 CONSTRAINT instance_updater_gen_nonnegative CHECK (updater_gen >= 0),
    CONSTRAINT instance_active_vmm_iff_vmm CHECK ((state = 'vmm') = (active_vmm_id IS NOT NULL)),
    CONSTRAINT instance_target_with_migration CHECK ((target_vmm_id IS NULL) = (migration_id IS NULL)),
    CONSTRAINT instance_target_beside_active
        CHECK (target_vmm_id IS NULL OR (active_vmm_id IS NOT NULL AND target_vmm_id <> active_vmm_id)),
    CONSTRAINT instance_failure_kind_known CHECK (failure_kind IS NULL OR failure_kind IN
        ('vmm_process_exited', 'vmm_failed', 'exceeds_reservation', 'vmm_gone', 'sled_lost', 'saga_unwound', 'unknown')),
    CONSTRAINT instance_failure_iff_failed CHECK (CASE WHEN state = 'failed'
        THEN failure_kind IS NOT NULL AND failure_kind <> '' AND failure_message IS NOT NULL
        ELSE failure_kind IS NULL AND failure_message IS NULL END)
);

-- A name is unique among the instances not destroyed.
CREATE UNIQUE INDEX instance_name_unique ON instance (name) WHERE state <> 'destroyed';

CREATE TABLE vmm (
    id              UUID PRIMARY KEY,
    instance_id     UUID NOT NULL CONSTRAINT vmm_instance_fk REFERENCES instance (id),
    sled_id         UUID NOT NULL CONSTRAINT vmm_sled_fk REFERENCES sled (id),
    address         TEXT NOT NULL DEFAULT '',
    cpus            INT8 NOT NULL CONSTRAINT vmm_cpus_positive CHECK (cpus > 0),
    memory_mib      INT8 NOT NULL CONSTRAINT vmm_memory_positive CHECK (memory_mib > 0),
    time_created    TIMESTAMPTZ NOT NULL,
    state           TEXT NOT NULL CONSTRAINT vmm_state_known CHECK (state IN ('creating', 'starting', 'running',
        'stopping', 'stopped', 'rebooting', 'migrating', 'failed', 'destroyed', 'saga_unwound')),
    gen             INT8 NOT NULL CONSTRAINT vmm_gen_positive CHECK (gen >= 1),
    time_updated    TIMESTAMPTZ NOT NULL,
    failure_kind    TEXT NULL,
    failure_message TEXT NULL,
    time_retired    TIMESTAMPTZ NULL,
    CONSTRAINT vmm_failure_kind_known CHECK (failure_kind IS NULL OR failure_kind IN
        ('vmm_process_exited', 'vmm_failed', 'exceeds_reservation', 'vmm_gone', 'sled_lost', 'saga_unwound', 'unknown')),
    CONSTRAINT vmm_failure_iff_failed CHECK (CASE WHEN state = 'failed'
        THEN failure_kind IS NOT NULL AND failure_kind <> '' AND failure_message IS NOT NULL
        ELSE failure_kind IS NULL AND failure_message IS NULL END),
    CONSTRAINT vmm_retired_only_terminal
        CHECK (time_retired IS NULL OR state IN ('failed', 'destroyed', 'saga_unwound'))
);

CREATE INDEX vmm_on_sled ON vmm (sled_id, id) WHERE time_retired IS NULL;
CREATE INDEX vmm_of_instance ON vmm (instance_id);

CREATE TABLE migration (
    id                  UUID PRIMARY KEY,
    instance_id         UUID NOT NULL CONSTRAINT migration_instance_fk REFERENCES instance (id),
    source_vmm_id       UUID NOT NULL CONSTRAINT migration_source_fk REFERENCES vmm (id),
    target_vmm_id       UUID NOT NULL CONSTRAINT migration_target_fk REFERENCES vmm (id),
    source_state        TEXT NOT NULL CONSTRAINT migration_source_state_known
        CHECK (source_state IN ('pending', 'in_progress', 'completed', 'failed')),
    source_gen          INT8 NOT NULL CONSTRAINT migration_source_gen_positive CHECK (source_gen >= 1),
    source_time_updated TIMESTAMPTZ NOT NULL,
    target_state        TEXT NOT NULL CONSTRAINT migration_target_state_known
        CHECK (target_state IN ('pending', 'in_progress', 'completed', 'failed')),
    target_gen          INT8 NOT NULL CONSTRAINT migration_target_gen_positive CHECK (target_gen >= 1),
    target_time_updated TIMESTAMPTZ NOT NULL,
    time_created        TIMESTAMPTZ NOT NULL,
    CONSTRAINT migration_vmms_differ CHECK (source_vmm_id <> target_vmm_id)
);

CREATE INDEX migration_of_instance ON migration (instance_id);

-- A VMM's hold on its sled's resources, while it can still run.
CREATE TABLE sled_reservation (
    vmm_id       UUID PRIMARY KEY CONSTRAINT sled_reservation_vmm_fk REFERENCES vmm (id),
    sled_id      UUID NOT NULL CONSTRAINT sled_reservation_sled_fk REFERENCES sled (id),
    cpus         INT8 NOT NULL CONSTRAINT sled_reservation_cpus_positive CHECK (cpus > 0),
    memory_mib   INT8 NOT NULL CONSTRAINT sled_reservation_memory_positive CHECK (memory_mib > 0),
    time_created TIMESTAMPTZ NOT NULL
);

CREATE INDEX sled_reservation_on_sled ON sled_reservation (sled_id);

-- The instance points at VMMs and a migration made after it.
ALTER TABLE instance ADD CONSTRAINT instance_active_vmm_fk FOREIGN KEY (active_vmm_id) REFERENCES vmm (id);
ALTER TABLE instance ADD CONSTRAINT instance_target_vmm_fk FOREIGN KEY (target_vmm_id) REFERENCES vmm (id);
ALTER TABLE instance ADD CONSTRAINT instance_migration_fk FOREIGN KEY (migration_id) REFERENCES migration (id);

-- +goose Down
ALTER TABLE instance DROP CONSTRAINT instance_migration_fk;
ALTER TABLE instance DROP CONSTRAINT instance_target_vmm_fk;
ALTER TABLE instance DROP CONSTRAINT instance_active_vmm_fk;
DROP TABLE sled_reservation;
DROP TABLE migration;
DROP TABLE vmm;
DROP TABLE instance;
DROP TABLE sled;
