-- echora: compatible
-- Push delivery: each push-mode bot's signing secret and delivery state, and each entry's next
-- attempt. New nullable columns and an index only: an older server ignores them (it pushes
-- nothing, so its push bots keep their entries for polls).

-- The Standard Webhooks signing secret ("whsec_" + base64), kept so it can sign (an HMAC key
-- cannot be stored hashed). After a rotation the previous one signs too until
-- previous_secret_until.
ALTER TABLE bots
    ADD COLUMN webhook_secret          text CHECK (webhook_secret LIKE 'whsec\_%'),
    ADD COLUMN previous_webhook_secret text CHECK (previous_webhook_secret LIKE 'whsec\_%'),
    ADD COLUMN previous_secret_until   timestamptz,
    -- A 410 answer stops pushing until an admin sets the delivery again.
    ADD COLUMN callback_disabled_at    timestamptz,
    ADD COLUMN last_delivered_at       timestamptz,
    ADD COLUMN last_delivery_error     text CHECK (length(last_delivery_error) <= 200),
    ADD COLUMN last_delivery_error_at  timestamptz;

-- Push sends only a bot's oldest unacknowledged live entry. Before a send the dispatcher
-- moves next_attempt_at past the attempt's timeout (its lease: a crashed sender's claim runs
-- out); after a failure, to the retry schedule's next time. NULL: due now.
ALTER TABLE inbox_entries ADD COLUMN next_attempt_at timestamptz;

-- A bot's unacknowledged entries in order: the push head, polls, the backlog count.
CREATE INDEX inbox_entries_unacked_idx ON inbox_entries (bot_id, id) WHERE acked_at IS NULL;
