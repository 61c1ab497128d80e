-- echora: compatible
-- Read state: how far each member has read each channel, and who each message mentions.
-- New tables only: a server of the release before neither reads nor writes them (messages it
-- stores record no mentions).

-- The newest message a member has read in a channel. It only moves forward. A membership's
-- row goes with the membership (leaving, removal from the workspace), so it exists only for
-- members; no foreign key to the message: deleting it keeps the position.
CREATE TABLE read_states (
    channel_id            bigint NOT NULL,
    user_id               bigint NOT NULL,
    last_read_message_id  bigint NOT NULL CHECK (last_read_message_id > 0),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (channel_id, user_id),
    FOREIGN KEY (channel_id, user_id)
        REFERENCES channel_members (channel_id, user_id) ON DELETE CASCADE
);

-- An @username in a message that named a member of its channel (never its author), as the
-- message was written or last edited.
CREATE TABLE message_mentions (
    message_id  bigint NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    user_id     bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    PRIMARY KEY (message_id, user_id)
);
CREATE INDEX message_mentions_user_idx ON message_mentions (user_id, message_id);
