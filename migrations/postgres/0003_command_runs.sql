-- Recovery command runs (two-person rule). Each state change is a conditional UPDATE on
-- `state`, so racing approvals or workers move a run at most once. `params` holds the
-- validated parameters exactly as approved; execution never re-parses text.
create table command_runs (
    id bigserial primary key,
    incident_id bigint not null references incidents (id),
    command text not null,
    action text not null,
    params text not null,
    requester text not null,
    approvers text not null default '[]',
    required_approvals bigint not null,
    state text not null,
    preview text,
    result text,
    expires_at_ms bigint not null,
    executing_until_ms bigint,
    created_at_ms bigint not null,
    updated_at_ms bigint not null
);
create index command_runs_state on command_runs (state);
