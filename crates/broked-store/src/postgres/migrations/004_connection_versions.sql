ALTER TABLE connections ADD COLUMN updated_by TEXT;
     ALTER TABLE connections ADD COLUMN changed TEXT;
     CREATE TABLE connection_versions (
        conn_id TEXT COLLATE "C" NOT NULL,
        version BIGINT NOT NULL,
        conn_type TEXT COLLATE "C" NOT NULL,
        host TEXT,
        port INTEGER CHECK (port BETWEEN 1 AND 65535),
        schema_name TEXT,
        login TEXT,
        password BYTEA,
        password_key BIGINT,
        extra BYTEA,
        extra_key BIGINT,
        description TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        updated_by TEXT,
        changed TEXT,
        deleted INTEGER NOT NULL DEFAULT 0 CHECK (deleted IN (0, 1)),
        PRIMARY KEY (conn_id, version),
        CHECK ((password IS NULL) = (password_key IS NULL)),
        CHECK ((extra IS NULL) = (extra_key IS NULL))
     );
     CREATE INDEX connection_versions_password_key ON connection_versions (password_key);
     CREATE INDEX connection_versions_extra_key ON connection_versions (extra_key);
