-- As in the SQLite migration: console sessions (ids kept as SHA-256, one
-- per token, permissions read from the configuration) and recovery runs,
-- shared by every replica.
create table console_sessions (
    id_sha256   text   collate "C" primary key,
    token_name  text   not null unique,
    started_ns  bigint not null,
    seen_ns     bigint not null
);

create table recovery_runs (
    id           text   collate "C" primary key,
    started_by   text   not null,
    started_ns   bigint not null,
    plan         text   not null,
    report       text   not null,
    updated_ns   bigint not null,
    finished_ns  bigint
);

create index recovery_runs_by_start on recovery_runs (started_ns);
