-- Announcements in #incident-response get a lane class of their own (`announce`), so the
-- worker claims them together and posts them as digests, one at a time (the channel takes
-- one post per second). Lanes written before this were classed `slack`.
update outbox_lanes set class = 'announce' where ordering_key like 'announce:%';
