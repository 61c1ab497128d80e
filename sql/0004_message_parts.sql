-- echora: compatible
-- What a message carries besides its text: its uploaded files in the order the sender gave
-- them, and external links.

-- The attachment's place in its message (0 first), set when it is linked: the order the
-- sender listed the files in is part of the message. NULL while unlinked.
ALTER TABLE attachments ADD COLUMN position smallint CHECK (position BETWEEN 0 AND 99);

-- External links as [{"url": "https://…", "title": "…"}], validated by the server (http
-- and https only). A column rather than a table: links belong to one message, are never
-- looked up on their own, come with every read of it and go with its row when it is
-- deleted (no text lingers, like the content).
ALTER TABLE messages ADD COLUMN links jsonb NOT NULL DEFAULT '[]'::jsonb
    -- CASE, not AND: jsonb_array_length raises on a non-array, and AND may run it first.
    CHECK (CASE WHEN jsonb_typeof(links) = 'array' THEN jsonb_array_length(links) <= 10
                ELSE false END);
