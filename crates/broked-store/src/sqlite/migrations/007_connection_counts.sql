CREATE TABLE connection_counts (
        conn_type TEXT PRIMARY KEY,
        n INTEGER NOT NULL
     ) WITHOUT ROWID;
     INSERT INTO connection_counts (conn_type, n)
        SELECT conn_type, count(*) FROM connections GROUP BY conn_type;
     CREATE TRIGGER connection_counts_insert AFTER INSERT ON connections
     BEGIN
        INSERT INTO connection_counts (conn_type, n) VALUES (NEW.conn_type, 1)
           ON CONFLICT (conn_type) DO UPDATE SET n = n + 1;
     END;
     CREATE TRIGGER connection_counts_delete AFTER DELETE ON connections
     BEGIN
        UPDATE connection_counts SET n = n - 1 WHERE conn_type = OLD.conn_type;
     END;
     CREATE TRIGGER connection_counts_retype AFTER UPDATE OF conn_type ON connections
        WHEN OLD.conn_type IS NOT NEW.conn_type
     BEGIN
        UPDATE connection_counts SET n = n - 1 WHERE conn_type = OLD.conn_type;
        INSERT INTO connection_counts (conn_type, n) VALUES (NEW.conn_type, 1)
           ON CONFLICT (conn_type) DO UPDATE SET n = n + 1;
     END;
