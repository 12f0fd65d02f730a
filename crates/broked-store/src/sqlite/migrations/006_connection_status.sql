CREATE TABLE IF NOT EXISTS connection_status (
        conn_id TEXT PRIMARY KEY REFERENCES connections (conn_id) ON DELETE CASCADE,
        version INTEGER NOT NULL,
        tested_at TEXT NOT NULL,
        ok INTEGER NOT NULL CHECK (ok IN (0, 1)),
        message TEXT NOT NULL
     ) WITHOUT ROWID;
     CREATE INDEX IF NOT EXISTS connection_status_ok ON connection_status (ok, conn_id);
