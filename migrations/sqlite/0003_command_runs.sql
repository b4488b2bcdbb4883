-- Recovery command runs (two-person rule). Each state change is a conditional UPDATE on
-- `state`, so racing approvals or workers move a run at most once. `params` holds the
-- validated parameters exactly as approved; execution never re-parses text.
create table command_runs (
    id integer primary key autoincrement,
    incident_id integer not null references incidents (id),
    command text not null,
    action text not null,
    params text not null,
    requester text not null,
    approvers text not null default '[]',
    required_approvals integer not null,
    state text not null,
    preview text,
    result text,
    expires_at_ms integer not null,
    executing_until_ms integer,
    created_at_ms integer not null,
    updated_at_ms integer not null
);
create index command_runs_state on command_runs (state);
