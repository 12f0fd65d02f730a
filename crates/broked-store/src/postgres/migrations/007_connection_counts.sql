CREATE TABLE connection_counts (
        conn_type TEXT COLLATE "C" PRIMARY KEY,
        n BIGINT NOT NULL
     );
     CREATE TABLE connection_count_deltas (
        conn_type TEXT COLLATE "C" NOT NULL,
        n BIGINT NOT NULL
     );
     -- The trigger functions name the schema they were made in (not SET search_path, which
     -- costs each call a save and restore of the setting), so that they run for every writer
     -- whatever its search path.
     DO $migration$
     DECLARE
        s TEXT := quote_ident(current_schema());
     BEGIN
        EXECUTE format($f$
           CREATE FUNCTION %1$s.connection_counts_inserted() RETURNS trigger
           LANGUAGE plpgsql AS $$
           BEGIN
              INSERT INTO %1$s.connection_count_deltas (conn_type, n)
                 SELECT conn_type, count(*) FROM inserted GROUP BY conn_type;
              RETURN NULL;
           END $$;
           CREATE FUNCTION %1$s.connection_counts_deleted() RETURNS trigger
           LANGUAGE plpgsql AS $$
           BEGIN
              INSERT INTO %1$s.connection_count_deltas (conn_type, n)
                 SELECT conn_type, -count(*) FROM deleted GROUP BY conn_type;
              RETURN NULL;
           END $$;
           CREATE FUNCTION %1$s.connection_counts_retyped() RETURNS trigger
           LANGUAGE plpgsql AS $$
           BEGIN
              INSERT INTO %1$s.connection_count_deltas (conn_type, n)
                 VALUES (OLD.conn_type, -1), (NEW.conn_type, 1);
              RETURN NULL;
           END $$;
           CREATE FUNCTION %1$s.connection_counts_truncated() RETURNS trigger
           LANGUAGE plpgsql AS $$
           BEGIN
              DELETE FROM %1$s.connection_count_deltas;
              DELETE FROM %1$s.connection_counts;
              RETURN NULL;
           END $$;
        $f$, s);
     END $migration$;
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
