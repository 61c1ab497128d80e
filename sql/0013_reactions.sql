-- echora: compatible
-- Reactions: one per user, message and emoji. A new table only: a server of the release
-- before neither reads nor writes it, and deleting a message deletes its reactions.

CREATE TABLE reactions (
    -- Orders a message's emoji by first use.
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id  bigint NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    user_id     bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- Checked by the API (reactions.shapes.EMOJI_PATTERN); the length is code points.
    emoji       text NOT NULL CHECK (length(emoji) BETWEEN 1 AND 32),
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- Also the index a page's batch reads by (message_id = ANY(...)).
    UNIQUE (message_id, emoji, user_id)
);
CREATE INDEX reactions_user_idx ON reactions (user_id);
