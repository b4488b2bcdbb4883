-- Delivery lanes (see src/domain/outbound.rs and src/store/outbox.rs).
--
-- One row per ordering key that has (or recently had) pending outbox rows. The lane, not
-- the row, carries the schedule and the lease:
--   due_at_ms    when the lane's head may be tried next: now for a fresh row, the backoff
--                or Retry-After after a failure, the lease expiry while a worker holds it;
--                null when the lane has nothing pending. The worker's claim and its
--                "when do I wake up" are both an index range over this column, so their
--                cost does not grow with the backlog behind the heads.
--   lease_owner  the worker instance delivering the head (a random token per process);
--                completion only moves the lane on if it still holds it.
create table outbox_lanes (
    ordering_key text primary key,
    class text not null,
    due_at_ms integer,
    lease_owner text,
    updated_at_ms integer not null
);
create index outbox_lanes_due on outbox_lanes (class, due_at_ms) where due_at_ms is not null;
create index outbox_lanes_idle on outbox_lanes (updated_at_ms) where due_at_ms is null;

insert into outbox_lanes (ordering_key, class, due_at_ms, updated_at_ms)
select ordering_key,
       case when ordering_key like 'page:%' then 'page'
            when ordering_key like 'run:%' then 'run'
            else 'slack' end,
       min(next_attempt_at_ms),
       min(created_at_ms)
from outbox where state = 'pending' group by ordering_key;

-- Retention: delivered rows and finished timers are pruned after a configured age.
create index outbox_finished on outbox (state, finished_at_ms);
alter table timers add column finished_at_ms integer;
update timers set finished_at_ms = coalesce(fired_at_ms, created_at_ms) where state <> 'pending';
create index timers_finished on timers (state, finished_at_ms);
create index inbound_events_age on inbound_events (received_at_ms);
create index timers_leased on timers (lease_until_ms) where lease_until_ms is not null;
