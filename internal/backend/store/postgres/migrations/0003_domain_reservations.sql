-- 0003: domains reserved by a tenant (docs/store.md). A reserved domain can
-- be served only by its holder's apps, whatever their status; a reservation
-- outlives the apps that made it.

CREATE TABLE domain_reservations (
    domain     text PRIMARY KEY, -- lowercase, no trailing dot
    user_id    text NOT NULL REFERENCES users (id),
    proof      text NOT NULL CHECK (proof IN ('certificate', 'admin')),
    created_at timestamptz NOT NULL
);
CREATE INDEX domain_reservations_user ON domain_reservations (user_id, domain);
