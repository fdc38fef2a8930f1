-- 0002: per-user quotas (zero = unlimited); a user without a row has none.

CREATE TABLE quotas (
    user_id      text PRIMARY KEY REFERENCES users (id),
    active_apps  integer NOT NULL DEFAULT 0 CHECK (active_apps >= 0),
    memory_mib   bigint  NOT NULL DEFAULT 0 CHECK (memory_mib >= 0),
    cores        integer NOT NULL DEFAULT 0 CHECK (cores >= 0),
    bundle_bytes bigint  NOT NULL DEFAULT 0 CHECK (bundle_bytes >= 0),
    log_follows  integer NOT NULL DEFAULT 0 CHECK (log_follows >= 0)
);
