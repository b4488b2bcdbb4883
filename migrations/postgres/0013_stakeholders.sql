-- Stakeholders (issue 9): the Statuspage incident opened for a Klaxon incident, stored
-- as soon as Statuspage answers the create, so later notices update it instead of
-- creating a second one (Statuspage has no idempotency key).
create table statuspage_incidents (
    incident_id bigint not null,
    page_id text not null,
    statuspage_id text not null,
    created_at_ms bigint not null,
    primary key (incident_id, page_id)
);

-- Stakeholder cadences (`stakeholder:<group>`) and the regulatory reminder
-- (`regulatory`) repeat like status reminders: the once-only guard leaves them out.
drop index timers_fired_once;
create unique index timers_fired_once on timers (incident_id, kind)
    where state = 'fired' and kind <> 'status_reminder' and kind <> 'regulatory'
      and kind not like 'stakeholder:%';
