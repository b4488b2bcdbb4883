-- Incidents: the current state of each incident (a projection of its timeline). The full
-- state is a JSON document; the columns beside it are what queries filter on.
-- All times are UTC milliseconds since the epoch, the same on SQLite and PostgreSQL.
create table incidents (
    id integer primary key autoincrement,
    status text not null,
    severity text not null,
    channel_id text,
    state text not null,
    created_at_ms integer not null,
    updated_at_ms integer not null
);
create unique index incidents_channel_id on incidents (channel_id) where channel_id is not null;
create index incidents_status on incidents (status);

-- The timeline: append-only, hash-chained per incident (see src/domain/timeline.rs).
create table timeline (
    incident_id integer not null references incidents (id),
    seq integer not null,
    at_ms integer not null,
    actor text not null,
    request_id text not null,
    kind text not null,
    prev_hash text not null,
    hash text not null,
    primary key (incident_id, seq)
);
create trigger timeline_no_update before update on timeline
begin
    select raise(abort, 'timeline is append-only');
end;
create trigger timeline_no_delete before delete on timeline
begin
    select raise(abort, 'timeline is append-only');
end;

-- The transactional outbox: every outbound call, written in the same transaction as the
-- change that caused it. Rows with the same ordering_key are delivered in id order.
create table outbox (
    id integer primary key autoincrement,
    ordering_key text not null,
    incident_id integer references incidents (id),
    payload text not null,
    state text not null default 'pending',
    attempts integer not null default 0,
    next_attempt_at_ms integer not null,
    lease_until_ms integer,
    last_error text,
    created_at_ms integer not null,
    finished_at_ms integer
);
create index outbox_pending on outbox (state, ordering_key, id);

-- Inbound requests already processed (Slack Events API retries carry the same event_id).
create table inbound_events (
    source text not null,
    event_id text not null,
    received_at_ms integer not null,
    primary key (source, event_id)
);
