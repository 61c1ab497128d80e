-- Channels, channel membership, messages, and the events outbox of the PostgreSQL fan-out.

CREATE TABLE channels (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workspace_id  bigint NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 80),
    topic         text NOT NULL DEFAULT '' CHECK (length(topic) <= 250),
    private       boolean NOT NULL DEFAULT false,
    created_by    bigint REFERENCES users (id) ON DELETE SET NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    -- The target of the composite foreign keys below: a row that names a channel also names
    -- the channel's workspace, and the database guarantees the two agree.
    UNIQUE (id, workspace_id)
);
-- Names keep their case but are unique per workspace regardless of it.
CREATE UNIQUE INDEX channels_workspace_name_idx ON channels (workspace_id, lower(name));

CREATE TABLE channel_members (
    channel_id    bigint NOT NULL,
    user_id       bigint NOT NULL,
    workspace_id  bigint NOT NULL,
    joined_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (channel_id, user_id),
    FOREIGN KEY (channel_id, workspace_id)
        REFERENCES channels (id, workspace_id) ON DELETE CASCADE,
    -- Only a current workspace member can be in one of its channels: removing the workspace
    -- membership removes the channel memberships with it, whatever code path deletes it.
    FOREIGN KEY (workspace_id, user_id)
        REFERENCES memberships (workspace_id, user_id) ON DELETE CASCADE
);
CREATE INDEX channel_members_user_idx ON channel_members (user_id);

-- Deleting a message deletes the row (no tombstone): deleted text must not linger in the
-- database or its backups, and no read path has to remember to filter it out.
CREATE TABLE messages (
    -- Ids order messages globally; clients page and resume by them.
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    channel_id    bigint NOT NULL,
    workspace_id  bigint NOT NULL,
    -- No cascade: history is kept when its author leaves; users are never hard-deleted.
    author_id     bigint NOT NULL REFERENCES users (id),
    -- May be empty: attachment-only messages.
    content       text NOT NULL CHECK (length(content) <= 4000),
    -- Chosen by the client so a retried send is recognised instead of posted twice.
    client_id     text CHECK (length(client_id) BETWEEN 1 AND 64),
    created_at    timestamptz NOT NULL DEFAULT now(),
    edited_at     timestamptz,
    FOREIGN KEY (channel_id, workspace_id)
        REFERENCES channels (id, workspace_id) ON DELETE CASCADE,
    UNIQUE (author_id, channel_id, client_id)
);
CREATE INDEX messages_channel_idx ON messages (channel_id, id);

-- The PostgreSQL fan-out's outbox: a NOTIFY payload (8000 bytes at most) cannot carry a
-- large message event, so bodies are stored here and notifications point at them.
CREATE TABLE events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    created_at  timestamptz NOT NULL DEFAULT now(),
    body        jsonb NOT NULL
);
CREATE INDEX events_created_at_idx ON events (created_at);
