-- echora: compatible
-- Presence: who is online or away now, derived from every server process's WebSockets.
-- Nothing here is history and nothing needs to survive a database crash (which ends every
-- socket anyway), so the tables are UNLOGGED: no WAL for the frequent small writes. New
-- tables and functions only: a server of the release before never touches them.

-- One row per running server process: a lease it renews (its heartbeat). A process that
-- stops renewing (killed, frozen, cut off from the database) expires, and any other process
-- sweeps it away with its sockets' rows.
CREATE UNLOGGED TABLE presence_processes (
    id          uuid PRIMARY KEY,
    expires_at  timestamptz NOT NULL
);

-- Per process and user: that the process holds sockets of the user (or held them less than
-- the grace ago), and whether every one of them said it was idle.
CREATE UNLOGGED TABLE presence_sockets (
    user_id     bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    process_id  uuid NOT NULL REFERENCES presence_processes (id) ON DELETE CASCADE,
    away        boolean NOT NULL,
    PRIMARY KEY (user_id, process_id)
);
CREATE INDEX presence_sockets_process_idx ON presence_sockets (process_id);

-- What was last announced of each user who is not offline: the snapshot new sockets get,
-- and what a change is compared with (so each change is announced once, whichever process
-- makes it).
CREATE UNLOGGED TABLE presence (
    user_id  bigint PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    status   text NOT NULL CHECK (status IN ('online', 'away'))
);

-- Recompute each user's status from the live processes' rows and record it when it
-- changed; returns the changes, with the user's workspaces (who may hear of them). Each
-- user is settled under a transaction-scoped advisory lock, taken in id order (no
-- deadlock), so the settles of one user take turns and the last one sees every row
-- committed before it. VOLATILE: each query takes a snapshot after the lock was granted.
CREATE FUNCTION presence_settle(p_users bigint[])
RETURNS TABLE (changed_user bigint, new_status text, workspaces bigint[])
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    u bigint;
    fresh text;
    known text;
BEGIN
    FOREACH u IN ARRAY coalesce(
        (SELECT array_agg(DISTINCT x ORDER BY x) FROM unnest(p_users) AS x), '{}'
    ) LOOP
        -- The two-key form (its key space is apart from the one-key form's); a shared key
        -- between two users would only make them take turns.
        PERFORM pg_advisory_xact_lock(1886549349, (u & 2147483647)::int);
        SELECT CASE WHEN bool_or(NOT s.away) THEN 'online' WHEN bool_or(s.away) THEN 'away' END
        INTO fresh
        FROM presence_sockets s JOIN presence_processes p ON p.id = s.process_id
        WHERE s.user_id = u AND p.expires_at > now();
        SELECT pr.status INTO known FROM presence pr WHERE pr.user_id = u;
        IF fresh IS DISTINCT FROM known THEN
            IF fresh IS NULL THEN
                DELETE FROM presence pr WHERE pr.user_id = u;
            ELSE
                INSERT INTO presence AS pr (user_id, status) VALUES (u, fresh)
                ON CONFLICT ON CONSTRAINT presence_pkey DO UPDATE SET status = EXCLUDED.status;
            END IF;
            changed_user := u;
            new_status := coalesce(fresh, 'offline');
            workspaces := ARRAY(
                SELECT m.workspace_id FROM memberships m WHERE m.user_id = u
                ORDER BY m.workspace_id
            );
            RETURN NEXT;
        END IF;
    END LOOP;
END
$$;

-- A process writes what its sockets say of some users (p_away: true away, false online,
-- NULL none left) and settles them. Refused when its lease has run out: its rows no longer
-- count, and it must register again. KEY SHARE: no sweep deletes the process meanwhile.
CREATE FUNCTION presence_write(p_process uuid, p_users bigint[], p_away boolean[])
RETURNS TABLE (changed_user bigint, new_status text, workspaces bigint[])
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM 1 FROM presence_processes
    WHERE id = p_process AND expires_at > now() FOR KEY SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'the presence lease of process % ran out', p_process
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    DELETE FROM presence_sockets s
    USING unnest(p_users, p_away) AS w(u, away)
    WHERE w.away IS NULL AND s.process_id = p_process AND s.user_id = w.u;
    INSERT INTO presence_sockets AS s (user_id, process_id, away)
    SELECT w.u, p_process, w.away FROM unnest(p_users, p_away) AS w(u, away)
    WHERE w.away IS NOT NULL
    ON CONFLICT ON CONSTRAINT presence_sockets_pkey DO UPDATE SET away = EXCLUDED.away;
    RETURN QUERY SELECT * FROM presence_settle(p_users);
END
$$;

-- Expired processes go, with their rows; their users are settled (offline, unless another
-- process holds sockets of theirs). SKIP LOCKED: concurrent sweeps share the work, and a
-- process writing its rows (KEY SHARE) is left for the next sweep.
CREATE FUNCTION presence_sweep()
RETURNS TABLE (changed_user bigint, new_status text, workspaces bigint[])
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    gone uuid[];
    affected bigint[];
BEGIN
    SELECT array_agg(g.id) INTO gone FROM (
        SELECT p.id FROM presence_processes p WHERE p.expires_at <= now()
        FOR UPDATE SKIP LOCKED
    ) g;
    IF gone IS NULL THEN
        RETURN;
    END IF;
    SELECT array_agg(DISTINCT s.user_id) INTO affected
    FROM presence_sockets s WHERE s.process_id = ANY (gone);
    DELETE FROM presence_processes p WHERE p.id = ANY (gone);
    RETURN QUERY SELECT * FROM presence_settle(coalesce(affected, '{}'));
END
$$;
