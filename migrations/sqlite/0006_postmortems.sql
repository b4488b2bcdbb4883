-- Post-mortem drafts (issue 10): each draft Klaxon writes from an incident's record,
-- kept as written, plus the progress of its upload to Slack. The upload is three calls
-- (files.getUploadURLExternal, POST the bytes, files.completeUploadExternal); each step's
-- result is stored before the next, so a delivery retried after a crash resumes where it
-- stopped instead of uploading the file twice.
create table postmortems (
    id integer primary key autoincrement,
    incident_id integer not null references incidents (id),
    version integer not null,
    markdown text not null,
    requested_by text not null,
    created_at_ms integer not null,
    slack_file_id text,
    upload_url text,
    bytes_sent_at_ms integer,
    shared_at_ms integer,
    unique (incident_id, version)
);
create index incidents_created on incidents (created_at_ms);
