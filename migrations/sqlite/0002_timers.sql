-- Durable timers (status reminders, response deadline, escalation steps, RTO watch).
-- The engine reconciles each incident's pending rows with domain::timers::plan in the
-- same transaction as every change; the scheduler claims due rows with a lease and
-- marks them fired in the transaction that records what they did.
create table timers (
    id integer primary key autoincrement,
    incident_id integer not null references incidents (id),
    kind text not null,
    due_at_ms integer not null,
    state text not null default 'pending',
    lease_until_ms integer,
    fired_at_ms integer,
    created_at_ms integer not null
);
create index timers_due on timers (state, due_at_ms);
create index timers_incident on timers (incident_id, state);
-- A once-only timer (everything but status reminders) fires at most once per incident.
create unique index timers_fired_once on timers (incident_id, kind)
    where state = 'fired' and kind <> 'status_reminder';
