-- Deferred to the commit: by then a write holds the `state` row (docs/storage.md,
-- "Concurrency"), so the count rows are locked after it, in commit order, never while a
-- write still waits for other rows (two writes of crossing types would deadlock).
CREATE TABLE IF NOT EXISTS connection_counts (
        conn_type TEXT COLLATE "C" PRIMARY KEY,
        n BIGINT NOT NULL
     );
     INSERT INTO connection_counts (conn_type, n)
        SELECT conn_type, count(*) FROM connections GROUP BY conn_type;
     CREATE OR REPLACE FUNCTION broked_connection_counts() RETURNS trigger
     LANGUAGE plpgsql AS $$
     BEGIN
        IF TG_OP = 'DELETE' OR TG_OP = 'UPDATE' THEN
           UPDATE connection_counts SET n = n - 1 WHERE conn_type = OLD.conn_type;
        END IF;
        IF TG_OP = 'INSERT' OR TG_OP = 'UPDATE' THEN
           INSERT INTO connection_counts (conn_type, n) VALUES (NEW.conn_type, 1)
              ON CONFLICT (conn_type) DO UPDATE SET n = connection_counts.n + 1;
        END IF;
        RETURN NULL;
     END;
     $$;
     CREATE CONSTRAINT TRIGGER connection_counts_insert_delete
        AFTER INSERT OR DELETE ON connections
        DEFERRABLE INITIALLY DEFERRED
        FOR EACH ROW EXECUTE FUNCTION broked_connection_counts();
     CREATE CONSTRAINT TRIGGER connection_counts_retype
        AFTER UPDATE OF conn_type ON connections
        DEFERRABLE INITIALLY DEFERRED
        FOR EACH ROW WHEN (OLD.conn_type IS DISTINCT FROM NEW.conn_type)
        EXECUTE FUNCTION broked_connection_counts();
