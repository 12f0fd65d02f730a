CREATE TABLE connection_counts (
        conn_type TEXT COLLATE "C" PRIMARY KEY,
        n BIGINT NOT NULL
     );
     CREATE TABLE connection_count_deltas (
        conn_type TEXT COLLATE "C" NOT NULL,
        n BIGINT NOT NULL
     );
     CREATE FUNCTION connection_counts_inserted() RETURNS trigger LANGUAGE plpgsql
        SET search_path FROM CURRENT AS $$
     BEGIN
        INSERT INTO connection_count_deltas (conn_type, n)
           SELECT conn_type, count(*) FROM inserted GROUP BY conn_type;
        RETURN NULL;
     END $$;
     CREATE FUNCTION connection_counts_deleted() RETURNS trigger LANGUAGE plpgsql
        SET search_path FROM CURRENT AS $$
     BEGIN
        INSERT INTO connection_count_deltas (conn_type, n)
           SELECT conn_type, -count(*) FROM deleted GROUP BY conn_type;
        RETURN NULL;
     END $$;
     CREATE FUNCTION connection_counts_retyped() RETURNS trigger LANGUAGE plpgsql
        SET search_path FROM CURRENT AS $$
     BEGIN
        INSERT INTO connection_count_deltas (conn_type, n)
           VALUES (OLD.conn_type, -1), (NEW.conn_type, 1);
        RETURN NULL;
     END $$;
     CREATE FUNCTION connection_counts_truncated() RETURNS trigger LANGUAGE plpgsql
        SET search_path FROM CURRENT AS $$
     BEGIN
        DELETE FROM connection_count_deltas;
        DELETE FROM connection_counts;
        RETURN NULL;
     END $$;
     CREATE TRIGGER connection_counts_insert AFTER INSERT ON connections
        REFERENCING NEW TABLE AS inserted
        FOR EACH STATEMENT EXECUTE FUNCTION connection_counts_inserted();
     CREATE TRIGGER connection_counts_delete AFTER DELETE ON connections
        REFERENCING OLD TABLE AS deleted
        FOR EACH STATEMENT EXECUTE FUNCTION connection_counts_deleted();
     CREATE TRIGGER connection_counts_retype AFTER UPDATE OF conn_type ON connections
        FOR EACH ROW WHEN (OLD.conn_type IS DISTINCT FROM NEW.conn_type)
        EXECUTE FUNCTION connection_counts_retyped();
     CREATE TRIGGER connection_counts_truncate AFTER TRUNCATE ON connections
        FOR EACH STATEMENT EXECUTE FUNCTION connection_counts_truncated();
     INSERT INTO connection_counts (conn_type, n)
        SELECT conn_type, count(*) FROM connections GROUP BY conn_type;
