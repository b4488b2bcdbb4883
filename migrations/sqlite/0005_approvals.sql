-- Approvals as rows the database itself guards (issue 8).
--
-- * `run_eligible_approvers`: who may approve a run, frozen when the run is requested
--   (role holders and group members at that moment, each with its source). Rows can only
--   be written while the run is `preparing`, and never changed: a role taken later grants
--   nothing.
-- * `run_approvals`: one row per (run, approver). The requester is refused, an approver
--   outside the frozen set is refused, and only a `pending` run takes approvals.
-- * `command_runs` cannot become `approved` with fewer approval rows than it requires.
-- The old JSON `approvers` column stays (SQLite cannot drop it cheaply) but is unused.

alter table command_runs add column approval_channel text;
alter table command_runs add column approval_ts text;
alter table command_runs add column approval_requested_at_ms integer;
alter table command_runs add column closed_by text;
alter table command_runs add column closed_at_ms integer;
alter table command_runs add column close_reason text;

create table run_eligible_approvers (
    run_id integer not null references command_runs (id),
    approver text not null,
    source text not null,
    primary key (run_id, approver, source)
);

create table run_approvals (
    run_id integer not null references command_runs (id),
    approver text not null,
    approved_at_ms integer not null,
    primary key (run_id, approver)
);

create trigger run_eligible_frozen before insert on run_eligible_approvers
when (select state from command_runs where id = new.run_id) is not 'preparing'
begin
    select raise(abort, 'klaxon-refused: eligible approvers are frozen when a run is requested');
end;
create trigger run_eligible_no_update before update on run_eligible_approvers
begin
    select raise(abort, 'klaxon-refused: eligible approvers are frozen when a run is requested');
end;
create trigger run_eligible_no_delete before delete on run_eligible_approvers
begin
    select raise(abort, 'klaxon-refused: eligible approvers are frozen when a run is requested');
end;

create trigger run_approvals_not_requester before insert on run_approvals
when new.approver = (select requester from command_runs where id = new.run_id)
begin
    select raise(abort, 'klaxon-refused: the requester cannot approve their own run');
end;
create trigger run_approvals_eligible before insert on run_approvals
when not exists (
    select 1 from run_eligible_approvers where run_id = new.run_id and approver = new.approver
)
begin
    select raise(abort, 'klaxon-refused: not an eligible approver of this run');
end;
create trigger run_approvals_pending before insert on run_approvals
when (select state from command_runs where id = new.run_id) is not 'pending'
begin
    select raise(abort, 'klaxon-refused: the run is not waiting for approval');
end;
create trigger run_approvals_no_update before update on run_approvals
begin
    select raise(abort, 'klaxon-refused: approvals are never changed');
end;
create trigger run_approvals_no_delete before delete on run_approvals
begin
    select raise(abort, 'klaxon-refused: approvals are never deleted');
end;

create trigger command_runs_approval_count before update of state on command_runs
when new.state = 'approved' and old.state is not 'approved'
    and new.required_approvals > 0
    and (select count(*) from run_approvals where run_id = new.id) < new.required_approvals
begin
    select raise(abort, 'klaxon-refused: not enough approvals to approve this run');
end;
create trigger command_runs_required_fixed before update of required_approvals, requester on command_runs
when new.required_approvals is not old.required_approvals or new.requester is not old.requester
begin
    select raise(abort, 'klaxon-refused: a run''s requester and required approvals never change');
end;

-- Optional TOTP step-up (commands with `step_up = "totp"`): one secret per user, sealed
-- with ChaCha20-Poly1305 (key from KLAXON_TOTP_KEY, user id as associated data).
-- `last_step` refuses a code whose time step was already used (RFC 6238 section 5.2).
create table totp_secrets (
    user_id text primary key,
    nonce text not null,
    ciphertext text not null,
    last_step integer not null default -1,
    created_at_ms integer not null
);
