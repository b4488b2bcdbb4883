-- App Home (issue 11): who opened Klaxon's Home tab recently, so a change to incidents or
-- runs republishes their tab (bounded: only viewers of the last days, see src/listen/home.rs).
create table home_viewers (
    user_id text primary key,
    opened_at_ms bigint not null
);
create index home_viewers_opened on home_viewers (opened_at_ms);
