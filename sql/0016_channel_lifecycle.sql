-- echora: compatible
-- Channel lifecycle: an archived channel is read-only (history stays readable). A nullable
-- column only: a server of the release before ignores it, so it would still accept writes
-- to an archived channel until it is replaced. Renaming and deleting need no schema change
-- (a channel's messages, attachments and tickets cascade with it, and their triggers queue
-- the stored objects).
ALTER TABLE channels
    ADD COLUMN archived_at timestamptz,
    -- A direct message is never archived: its members keep writing to it.
    ADD CONSTRAINT channels_dm_not_archived CHECK (kind = 'channel' OR archived_at IS NULL);
