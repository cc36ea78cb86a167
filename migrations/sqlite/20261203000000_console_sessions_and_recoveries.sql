-- Console sessions, shared by every process on the database, so any
-- replica serves any session and signing out ends it everywhere. The
-- session id is kept only as its SHA-256: a copy of the database signs no
-- one in. Permissions are not kept: they are read from the configuration
-- at each request, by the token's name, so a token removed from it ends
-- its sessions. One session per token: signing in again replaces it.
create table console_sessions (
    id_sha256   text    primary key,
    token_name  text    not null unique,
    started_ns  integer not null,
    seen_ns     integer not null
) strict;

-- Recovery runs started from the console, so a run's progress page works
-- from any replica and a second run is not started beside one still going.
-- `report` is the sweep's report as JSON (counts and error texts; never
-- patient data). `updated_ns` tells a run whose process died from one
-- still going.
create table recovery_runs (
    id           text    primary key,
    started_by   text    not null,
    started_ns   integer not null,
    plan         text    not null,
    report       text    not null,
    updated_ns   integer not null,
    finished_ns  integer
) strict;

create index recovery_runs_by_start on recovery_runs (started_ns);
