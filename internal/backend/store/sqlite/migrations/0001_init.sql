-- 0001: users, tokens, projects, apps, and the domain claims of active apps.
-- Times are TEXT in a fixed-width UTC form, 2006-01-02T15:04:05.000000Z,
-- so they sort as they compare and SQLite's date functions read them.

CREATE TABLE users (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    admin      INTEGER NOT NULL DEFAULT 0 CHECK (admin IN (0, 1)),
    created_at TEXT NOT NULL
);

CREATE TABLE tokens (
    id         TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users (id),
    name       TEXT NOT NULL DEFAULT '',
    hash       TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);
CREATE INDEX tokens_user ON tokens (user_id, created_at);

CREATE TABLE projects (
    id         TEXT PRIMARY KEY,
    owner_id   TEXT NOT NULL REFERENCES users (id),
    name       TEXT NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (owner_id, name),
    UNIQUE (id, owner_id) -- target of apps' (project_id, owner_id) key
);

CREATE TABLE apps (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT, -- insertion order: ties of created_at
    id          TEXT NOT NULL UNIQUE,
    owner_id    TEXT NOT NULL REFERENCES users (id),
    project_id  TEXT, -- NULL when the app has no project
    name        TEXT NOT NULL DEFAULT '',
    status      TEXT NOT NULL CHECK (status IN ('spawning', 'initializing', 'running', 'stopped', 'on_error')),
    hardware    TEXT NOT NULL DEFAULT '',
    domains     TEXT NOT NULL DEFAULT '[]', -- JSON array, as the caller gave them
    spec        BLOB,
    code_digest TEXT NOT NULL DEFAULT '',
    bundle_size INTEGER NOT NULL DEFAULT 0,
    node        BLOB,
    error       TEXT NOT NULL DEFAULT '',
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    expires_at  TEXT NOT NULL,
    stopped_at  TEXT,
    -- an app's project belongs to the app's owner
    FOREIGN KEY (project_id, owner_id) REFERENCES projects (id, owner_id)
);
CREATE INDEX apps_owner ON apps (owner_id, created_at);
CREATE INDEX apps_project ON apps (project_id, created_at);
CREATE INDEX apps_status ON apps (status);

-- One row per domain held by an ACTIVE app (spawning, initializing, running).
-- The primary key is the uniqueness of domains among active apps; rows are
-- deleted when the app reaches stopped or on_error.
CREATE TABLE app_domains (
    domain TEXT PRIMARY KEY, -- lowercase, no trailing dot
    app_id TEXT NOT NULL REFERENCES apps (id)
);
CREATE INDEX app_domains_app ON app_domains (app_id);
