-- echora: compatible
-- Presigned PUTs straight to the store, for a client that declares the file's SHA-256 when
-- it asks for a ticket: the URL signs that digest, the store refuses any other bytes, and
-- finalize reads back the digest the store verified instead of the whole object. A PUT
-- through Echora or a form POST checks a declared digest too. A server of the release
-- before finalizes a 'store_put' ticket as it does a 'post' one (it reads the object once).
ALTER TABLE upload_tickets
    ADD COLUMN declared_sha256 bytea CHECK (length(declared_sha256) = 32),
    DROP CONSTRAINT upload_tickets_method_check,
    ADD CONSTRAINT upload_tickets_method_check
        CHECK (method IN ('put', 'post', 'store_put')),
    ADD CONSTRAINT upload_tickets_store_put_declares
        CHECK (method <> 'store_put' OR declared_sha256 IS NOT NULL);
