-- See migrations/sqlite/0006_postmortems.sql.
create table postmortems (
    id bigserial primary key,
    incident_id bigint not null references incidents (id),
    version bigint not null,
    markdown text not null,
    requested_by text not null,
    created_at_ms bigint not null,
    slack_file_id text,
    upload_url text,
    bytes_sent_at_ms bigint,
    shared_at_ms bigint,
    unique (incident_id, version)
);
create index incidents_created on incidents (created_at_ms);
