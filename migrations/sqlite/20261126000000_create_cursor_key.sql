-- The key that authenticates pagination cursors (HMAC-SHA256). Made once,
-- when this migration runs, and kept with the data: cursors stay valid
-- across restarts, and every process serving this database issues and
-- accepts the same ones.
create table cursor_key (
    id  integer primary key check (id = 1),
    key blob    not null check (length(key) = 32)
) strict;

insert into cursor_key (id, key) values (1, randomblob(32));
