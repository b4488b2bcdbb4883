-- A declaration is acknowledged once its incident row exists with status 'declaring' and
-- what was asked (severity, title, who, request id) in `declaration` (JSON): one short
-- transaction, like any single INSERT. Its state, timeline, outbox rows and timers are
-- written right after by the intake in batches; a row still 'declaring' after a crash is
-- completed from `declaration` by whichever process finds it (see src/engine/intake.rs).
alter table incidents add column declaration text;
