-- echora: compatible
-- Per-workspace upload policy and exact storage quotas. New tables, a function and
-- triggers only: a server of the release before keeps working (it applies no policy, and
-- its inserts and deletes still keep the usage figures true through the triggers).

-- One row per workspace that changed anything; no row means the defaults (NULL: no limit).
CREATE TABLE workspace_settings (
    workspace_id   bigint PRIMARY KEY REFERENCES workspaces (id) ON DELETE CASCADE,
    -- At most the server's ECHORA_MAX_UPLOAD_BYTES, checked by the API; the smaller wins.
    max_file_size  bigint CHECK (max_file_size >= 0),
    -- Media types or group names (files.policy.TYPE_GROUPS); NULL: every type.
    allowed_types  text[] CHECK (cardinality(allowed_types) <= 100),
    denied_types   text[] NOT NULL DEFAULT '{}' CHECK (cardinality(denied_types) <= 100),
    tickets        boolean NOT NULL DEFAULT true,
    direct_uploads boolean NOT NULL DEFAULT true,
    storage_quota  bigint CHECK (storage_quota >= 0),
    member_quota   bigint CHECK (member_quota >= 0),
    bot_quota      bigint CHECK (bot_quota >= 0),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- Stored bytes per uploader and workspace, kept by the triggers below in the transaction
-- that inserts or deletes attachments: always the sum of their sizes (thumbnails not
-- counted). A workspace's figure is the sum of its rows.
CREATE TABLE upload_usage (
    workspace_id bigint NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    user_id      bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    bytes        bigint NOT NULL DEFAULT 0 CHECK (bytes >= 0),
    files        bigint NOT NULL DEFAULT 0 CHECK (files >= 0),
    PRIMARY KEY (workspace_id, user_id)
);

INSERT INTO upload_usage (workspace_id, user_id, bytes, files)
SELECT workspace_id, uploader_id, sum(size), count(*) FROM attachments GROUP BY 1, 2;

CREATE FUNCTION count_attachment_bytes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO upload_usage AS u (workspace_id, user_id, bytes, files)
    SELECT workspace_id, uploader_id, sum(size), count(*) FROM added GROUP BY 1, 2
    ON CONFLICT (workspace_id, user_id) DO UPDATE
    SET bytes = u.bytes + EXCLUDED.bytes, files = u.files + EXCLUDED.files;
    RETURN NULL;
END
$$;

CREATE FUNCTION free_attachment_bytes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- No row left to update when the workspace itself is being deleted: nothing to free.
    UPDATE upload_usage u SET bytes = u.bytes - d.bytes, files = u.files - d.files
    FROM (SELECT workspace_id, uploader_id, sum(size) AS bytes, count(*) AS files
          FROM removed GROUP BY 1, 2) d
    WHERE u.workspace_id = d.workspace_id AND u.user_id = d.uploader_id;
    RETURN NULL;
END
$$;

CREATE TRIGGER attachments_count_bytes
    AFTER INSERT ON attachments REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION count_attachment_bytes();
CREATE TRIGGER attachments_free_bytes
    AFTER DELETE ON attachments REFERENCING OLD TABLE AS removed
    FOR EACH STATEMENT EXECUTE FUNCTION free_attachment_bytes();
-- A size is never changed in place; refuse it rather than let the figures drift.
CREATE FUNCTION refuse_size_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'attachments.size and uploader_id are immutable';
END
$$;
CREATE TRIGGER attachments_size_immutable
    BEFORE UPDATE OF size, uploader_id, workspace_id ON attachments
    FOR EACH ROW WHEN (OLD.size IS DISTINCT FROM NEW.size
                       OR OLD.uploader_id IS DISTINCT FROM NEW.uploader_id
                       OR OLD.workspace_id IS DISTINCT FROM NEW.workspace_id)
    EXECUTE FUNCTION refuse_size_change();

-- Open tickets reserve their declared size in their workspace.
CREATE INDEX upload_tickets_workspace_open_idx ON upload_tickets (workspace_id)
    WHERE finalized_at IS NULL;

-- Whether an unfinalized ticket still holds its declared bytes at p_now: until it can no
-- longer receive bytes (a PUT ticket past expires_at that holds none and none in flight)
-- or be finalized.
CREATE FUNCTION ticket_reserves(t upload_tickets, p_now timestamptz) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT t.finalized_at IS NULL AND t.finalize_before > p_now
       AND (t.expires_at > p_now OR t.received_at IS NOT NULL OR t.method = 'post'
            OR t.sending_until > p_now)
$$;

-- Called by the statement that stores new bytes (an attachment insert, a ticket insert):
-- NULL when p_bytes fit every quota that applies to p_user, else what refused them. It
-- locks the workspace's settings row (a workspace quota) or the member's usage row (a
-- member or bot quota) until the caller's transaction ends, so concurrent writers are
-- counted one after another. VOLATILE: each query below takes a fresh snapshot, taken
-- after the lock was granted, so it sees every write committed before.
CREATE FUNCTION quota_refusal(p_workspace bigint, p_user bigint, p_bytes bigint,
                              p_now timestamptz) RETURNS jsonb
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    s workspace_settings;
    member_role text;
    quota bigint;
    used bigint;
    reserved bigint;
BEGIN
    SELECT * INTO s FROM workspace_settings WHERE workspace_id = p_workspace;
    IF NOT FOUND OR (s.storage_quota IS NULL AND s.member_quota IS NULL
                     AND s.bot_quota IS NULL) THEN
        RETURN NULL;
    END IF;
    IF s.storage_quota IS NOT NULL THEN
        PERFORM 1 FROM workspace_settings WHERE workspace_id = p_workspace FOR UPDATE;
        SELECT coalesce(sum(u.bytes), 0) INTO used
        FROM upload_usage u WHERE u.workspace_id = p_workspace;
        SELECT coalesce(sum(t.size), 0) INTO reserved
        FROM upload_tickets t
        WHERE t.workspace_id = p_workspace AND t.finalized_at IS NULL
          AND ticket_reserves(t, p_now);
        IF used + reserved + p_bytes > s.storage_quota THEN
            RETURN jsonb_build_object('quota', 'workspace', 'bytes_used', used + reserved,
                                      'bytes_allowed', s.storage_quota);
        END IF;
    END IF;
    SELECT m.role INTO member_role
    FROM memberships m WHERE m.workspace_id = p_workspace AND m.user_id = p_user;
    quota := CASE WHEN member_role = 'bot' THEN s.bot_quota ELSE s.member_quota END;
    IF quota IS NOT NULL THEN
        INSERT INTO upload_usage (workspace_id, user_id) VALUES (p_workspace, p_user)
        ON CONFLICT (workspace_id, user_id) DO NOTHING;
        PERFORM 1 FROM upload_usage
        WHERE workspace_id = p_workspace AND user_id = p_user FOR UPDATE;
        SELECT u.bytes INTO used
        FROM upload_usage u WHERE u.workspace_id = p_workspace AND u.user_id = p_user;
        SELECT coalesce(sum(t.size), 0) INTO reserved
        FROM upload_tickets t
        WHERE t.owner_id = p_user AND t.workspace_id = p_workspace
          AND t.finalized_at IS NULL AND ticket_reserves(t, p_now);
        IF used + reserved + p_bytes > quota THEN
            RETURN jsonb_build_object(
                'quota', CASE WHEN member_role = 'bot' THEN 'bot' ELSE 'member' END,
                'bytes_used', used + reserved, 'bytes_allowed', quota);
        END IF;
    END IF;
    RETURN NULL;
END
$$;
