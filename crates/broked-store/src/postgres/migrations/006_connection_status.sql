CREATE TABLE IF NOT EXISTS connection_status (
        conn_id TEXT COLLATE "C" PRIMARY KEY REFERENCES connections (conn_id) ON DELETE CASCADE,
        version BIGINT NOT NULL,
        tested_at TEXT NOT NULL,
        ok INTEGER NOT NULL CHECK (ok IN (0, 1)),
        message TEXT NOT NULL
     );
     CREATE INDEX IF NOT EXISTS connection_status_ok ON connection_status (ok, conn_id);
