-- See migrations/sqlite/0001_skeleton.sql for what each table is for; the two schemas
-- differ only in dialect. All times are UTC milliseconds since the epoch.
create table incidents (
    id bigserial primary key,
    status text not null,
    severity text not null,
    channel_id text,
    state text not null,
    created_at_ms bigint not null,
    updated_at_ms bigint not null
);
create unique index incidents_channel_id on incidents (channel_id) where channel_id is not null;
create index incidents_status on incidents (status);

create table timeline (
    incident_id bigint not null references incidents (id),
    seq bigint not null,
    at_ms bigint not null,
    actor text not null,
    request_id text not null,
    kind text not null,
    prev_hash text not null,
    hash text not null,
    primary key (incident_id, seq)
);
create function timeline_append_only() returns trigger language plpgsql as $$
begin
    raise exception 'timeline is append-only';
end;
$$;
create trigger timeline_no_update_delete before update or delete on timeline
    for each row execute function timeline_append_only();

create table outbox (
    id bigserial primary key,
    ordering_key text not null,
    incident_id bigint references incidents (id),
    payload text not null,
    state text not null default 'pending',
    attempts bigint not null default 0,
    next_attempt_at_ms bigint not null,
    lease_until_ms bigint,
    last_error text,
    created_at_ms bigint not null,
    finished_at_ms bigint
);
create index outbox_pending on outbox (state, ordering_key, id);

create table inbound_events (
    source text not null,
    event_id text not null,
    received_at_ms bigint not null,
    primary key (source, event_id)
);
