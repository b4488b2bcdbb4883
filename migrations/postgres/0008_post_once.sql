-- Posts that are not repeated after a crash (src/outbox/once.rs).
--
--   attempt_started_at_ms  when a delivery of this row that may have reached Slack first
--                          started: set when the row is claimed, cleared again when the
--                          attempt ended knowing nothing went out (pacing, a 429). A row
--                          claimed with it set looks for its own post in the channel's
--                          history (message metadata) before posting again.
--   slack_channel, slack_ts  where the row's message landed, when it posted one.
alter table outbox add column attempt_started_at_ms bigint;
alter table outbox add column slack_channel text;
alter table outbox add column slack_ts text;

-- This database's id, written into every post's metadata so another installation's (or
-- an earlier database's) row with the same number is never taken for ours.
create table klaxon_install (
    id text primary key
);
insert into klaxon_install (id) values (md5(random()::text || clock_timestamp()::text));
