-- echora: compatible
-- Bot accounts and their durable inbox. New tables only: older servers never read them (they
-- stage no entries, which only matters for bots in push or poll mode).

-- A bot is a user (no password, workspace role 'bot', a token scoped to its workspace) with a
-- delivery mode. The bot's workspace is the one it was created in.
CREATE TABLE bots (
    user_id        bigint PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    workspace_id   bigint NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    delivery       text NOT NULL DEFAULT 'websocket'
                   CHECK (delivery IN ('websocket', 'push', 'poll')),
    callback_url   text CHECK (length(callback_url) BETWEEN 1 AND 2048),
    created_by     bigint REFERENCES users (id) ON DELETE SET NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    -- The last inbox entry id given to this bot: entry ids increase per bot, in the order
    -- of the commits that staged them (the row is locked from staging to commit).
    last_entry_id  bigint NOT NULL DEFAULT 0,
    CHECK (delivery <> 'push' OR callback_url IS NOT NULL)
);
CREATE INDEX bots_workspace_idx ON bots (workspace_id);

-- One row per event a push- or poll-mode bot is owed, written in the transaction of the write
-- that caused it. Deleted when it expires (a hard TTL from creation), whatever its state.
CREATE TABLE inbox_entries (
    bot_id          bigint NOT NULL REFERENCES bots (user_id) ON DELETE CASCADE,
    id              bigint NOT NULL CHECK (id > 0),
    workspace_id    bigint NOT NULL,
    channel_id      bigint,  -- the event's channel; NULL for workspace events
    type            text NOT NULL CHECK (length(type) BETWEEN 1 AND 64),
    body            jsonb NOT NULL,
    -- The files the event's message carries: a download of one stamps fetched_at.
    attachment_ids  text[] NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    -- A poll leases what it returns; until then no other poll of this bot gets it.
    leased_until    timestamptz,
    fetched_at      timestamptz,
    acked_at        timestamptz,
    attempts        integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    PRIMARY KEY (bot_id, id),
    CHECK (expires_at > created_at)
);
-- The expiry sweep.
CREATE INDEX inbox_entries_expires_idx ON inbox_entries (expires_at);
