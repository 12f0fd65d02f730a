CREATE TABLE state (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        generation INTEGER NOT NULL
     );
     INSERT INTO state (id, generation) VALUES (1, 0);
     CREATE TABLE keys (
        key_id INTEGER PRIMARY KEY,
        check_value TEXT NOT NULL,
        seals INTEGER NOT NULL DEFAULT 0
     );
     CREATE TABLE connections (
        conn_id TEXT PRIMARY KEY,
        conn_type TEXT NOT NULL,
        host TEXT,
        port INTEGER CHECK (port BETWEEN 1 AND 65535),
        schema_name TEXT,
        login TEXT,
        password BLOB,
        password_key INTEGER,
        extra BLOB,
        extra_key INTEGER,
        description TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        version INTEGER NOT NULL,
        CHECK ((password IS NULL) = (password_key IS NULL)),
        CHECK ((extra IS NULL) = (extra_key IS NULL))
     ) WITHOUT ROWID;
     CREATE INDEX connections_type ON connections (conn_type, conn_id);
     CREATE TABLE pipelines (
        pipeline_id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        definition TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
     ) WITHOUT ROWID;
     CREATE TABLE pipeline_refs (
        pipeline_id TEXT NOT NULL REFERENCES pipelines (pipeline_id) ON DELETE CASCADE,
        node_id TEXT NOT NULL,
        conn_id TEXT NOT NULL,
        PRIMARY KEY (pipeline_id, node_id)
     ) WITHOUT ROWID;
     CREATE INDEX pipeline_refs_conn ON pipeline_refs (conn_id);