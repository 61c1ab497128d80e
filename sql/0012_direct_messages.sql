-- echora: compatible
-- Direct messages: a conversation of 2 to 8 members of one workspace (bots included) is a
-- channel row of kind 'dm', private, whose member set is fixed at creation and unique per
-- workspace (asking for the same set again finds the same row). Older servers survive it:
-- the columns have defaults, the name index they insert against is untouched, and they see a
-- DM as a private channel of its members (no one else sees it). The trigger below keeps
-- anyone outside the set out of it whichever server writes.
ALTER TABLE channels
    ADD COLUMN kind text NOT NULL DEFAULT 'channel' CHECK (kind IN ('channel', 'dm')),
    -- The members' user ids, sorted, without duplicates; NULL for every other channel.
    ADD COLUMN member_ids bigint[]
        CHECK (member_ids IS NULL OR cardinality(member_ids) BETWEEN 2 AND 8),
    ADD CONSTRAINT channels_dm_shape CHECK (
        (kind = 'dm') = (member_ids IS NOT NULL) AND (kind <> 'dm' OR private)
    );

-- One conversation per member set and workspace: two first asks create one.
CREATE UNIQUE INDEX channels_dm_members_idx ON channels (workspace_id, member_ids)
    WHERE kind = 'dm';

-- A DM's channel_members rows are a subset of its member set, whatever code inserts them.
CREATE FUNCTION channel_members_dm_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (
        SELECT 1 FROM channels c
        WHERE c.id = NEW.channel_id AND c.kind = 'dm' AND NOT (NEW.user_id = ANY (c.member_ids))
    ) THEN
        RAISE EXCEPTION 'user % is not a member of direct message %', NEW.user_id, NEW.channel_id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER channel_members_dm_guard BEFORE INSERT OR UPDATE ON channel_members
    FOR EACH ROW EXECUTE FUNCTION channel_members_dm_guard();
