-- 0001: users, tokens, projects, apps, and the domain claims of active apps.
-- Same semantics as the SQLite schema; times are timestamptz (microseconds).

CREATE TABLE users (
    id         text PRIMARY KEY,
    name       text NOT NULL UNIQUE,
    admin      boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL
);

CREATE TABLE tokens (
    id         text PRIMARY KEY,
    user_id    text NOT NULL REFERENCES users (id),
    name       text NOT NULL DEFAULT '',
    hash       text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL,
    revoked_at timestamptz
);
CREATE INDEX tokens_user ON tokens (user_id, created_at);

CREATE TABLE projects (
    id         text PRIMARY KEY,
    owner_id   text NOT NULL REFERENCES users (id),
    name       text NOT NULL,
    created_at timestamptz NOT NULL,
    UNIQUE (owner_id, name),
    UNIQUE (id, owner_id) -- target of apps' (project_id, owner_id) key
);

CREATE TABLE apps (
    seq         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, -- insertion order: ties of created_at
    id          text NOT NULL UNIQUE,
    owner_id    text NOT NULL REFERENCES users (id),
    project_id  text, -- NULL when the app has no project
    name        text NOT NULL DEFAULT '',
    status      text NOT NULL CHECK (status IN ('spawning', 'initializing', 'running', 'stopped', 'on_error')),
    hardware    text NOT NULL DEFAULT '',
    domains     text[] NOT NULL DEFAULT '{}', -- as the caller gave them
    spec        bytea,
    code_digest text NOT NULL DEFAULT '',
    bundle_size bigint NOT NULL DEFAULT 0,
    node        bytea,
    error       text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    stopped_at  timestamptz,
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
    domain text PRIMARY KEY, -- lowercase, no trailing dot
    app_id text NOT NULL REFERENCES apps (id)
);
CREATE INDEX app_domains_app ON app_domains (app_id);
