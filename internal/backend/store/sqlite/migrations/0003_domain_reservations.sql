-- 0003: domains reserved by a tenant (docs/store.md). A reserved domain can
-- be served only by its holder's apps, whatever their status; a reservation
-- outlives the apps that made it.

CREATE TABLE domain_reservations (
    domain     TEXT PRIMARY KEY, -- lowercase, no trailing dot
    user_id    TEXT NOT NULL REFERENCES users (id),
    proof      TEXT NOT NULL CHECK (proof IN ('certificate', 'admin')),
    created_at TEXT NOT NULL
);
CREATE INDEX domain_reservations_user ON domain_reservations (user_id, domain);
