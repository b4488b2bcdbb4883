-- Approvals as rows the database itself guards (issue 8).
--
-- * `run_eligible_approvers`: who may approve a run, frozen when the run is requested
--   (role holders and group members at that moment, each with its source). Rows can only
--   be written while the run is `preparing`, and never changed: a role taken later grants
--   nothing.
-- * `run_approvals`: one row per (run, approver). The requester is refused, an approver
--   outside the frozen set is refused, and only a `pending` run takes approvals.
-- * `command_runs` cannot become `approved` with fewer approval rows than it requires.
--   The engine locks the run row (`for update`) before inserting an approval and counts
--   in the same transaction, so racing approvers are serialised.
-- The old JSON `approvers` column stays but is unused.

alter table command_runs add column approval_channel text;
alter table command_runs add column approval_ts text;
alter table command_runs add column approval_requested_at_ms bigint;
alter table command_runs add column closed_by text;
alter table command_runs add column closed_at_ms bigint;
alter table command_runs add column close_reason text;

create table run_eligible_approvers (
    run_id bigint not null references command_runs (id),
    approver text not null,
    source text not null,
    primary key (run_id, approver, source)
);

create table run_approvals (
    run_id bigint not null references command_runs (id),
    approver text not null,
    approved_at_ms bigint not null,
    primary key (run_id, approver)
);

create function run_eligible_frozen() returns trigger language plpgsql as $$
begin
    if tg_op <> 'INSERT' or (select state from command_runs where id = new.run_id) is distinct from 'preparing' then
        raise exception 'klaxon-refused: eligible approvers are frozen when a run is requested';
    end if;
    return new;
end;
$$;
create trigger run_eligible_frozen before insert or update or delete on run_eligible_approvers
    for each row execute function run_eligible_frozen();

create function run_approvals_guard() returns trigger language plpgsql as $$
declare
    run record;
begin
    if tg_op <> 'INSERT' then
        raise exception 'klaxon-refused: approvals are never changed or deleted';
    end if;
    select requester, state into run from command_runs where id = new.run_id for update;
    if run.requester = new.approver then
        raise exception 'klaxon-refused: the requester cannot approve their own run';
    end if;
    if not exists (
        select 1 from run_eligible_approvers where run_id = new.run_id and approver = new.approver
    ) then
        raise exception 'klaxon-refused: not an eligible approver of this run';
    end if;
    if run.state is distinct from 'pending' then
        raise exception 'klaxon-refused: the run is not waiting for approval';
    end if;
    return new;
end;
$$;
create trigger run_approvals_guard before insert or update or delete on run_approvals
    for each row execute function run_approvals_guard();

create function command_runs_guard() returns trigger language plpgsql as $$
begin
    if new.requester is distinct from old.requester
        or new.required_approvals is distinct from old.required_approvals then
        raise exception 'klaxon-refused: a run''s requester and required approvals never change';
    end if;
    if new.state = 'approved' and old.state is distinct from 'approved'
        and new.required_approvals > 0
        and (select count(*) from run_approvals where run_id = new.id) < new.required_approvals then
        raise exception 'klaxon-refused: not enough approvals to approve this run';
    end if;
    return new;
end;
$$;
create trigger command_runs_guard before update on command_runs
    for each row execute function command_runs_guard();

-- Optional TOTP step-up (commands with `step_up = "totp"`): one secret per user, sealed
-- with ChaCha20-Poly1305 (key from KLAXON_TOTP_KEY, user id as associated data).
-- `last_step` refuses a code whose time step was already used (RFC 6238 section 5.2).
create table totp_secrets (
    user_id text primary key,
    nonce text not null,
    ciphertext text not null,
    last_step bigint not null default -1,
    created_at_ms bigint not null
);
