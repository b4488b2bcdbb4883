-- PagerDuty in (issue 9).
--
-- pagerduty_incidents: which Klaxon incident each PagerDuty incident declared or joined.
-- A second trigger of the same PagerDuty incident finds it here and does nothing; later
-- events (acknowledged, resolved...) find their Klaxon incident here; resolving in Klaxon
-- resolves every PagerDuty incident linked to it.
create table pagerduty_incidents (
    pd_incident_id text primary key,
    incident_id integer not null,
    html_url text not null,
    service_id text,
    -- The service's team and stakeholder groups by config when it was linked (a JSON
    -- array of names), for the stakeholder updates.
    team text,
    stakeholder_groups text not null default '[]',
    created_at_ms integer not null
);
create index pagerduty_incidents_by_incident on pagerduty_incidents (incident_id);

-- pagerduty_storms: per PagerDuty service, the incident its triggers currently join (an
-- alert storm opens one incident, not hundreds). The trigger's transaction inserts the
-- service's row if missing and locks it (PostgreSQL: `for update`; SQLite has one writer),
-- so concurrent triggers of one service, on any replica, decide one after the other.
-- incident_id is null until the first trigger's incident is allocated.
create table pagerduty_storms (
    service_id text primary key,
    incident_id integer,
    opened_at_ms integer not null
);
