CREATE TABLE state (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        generation BIGINT NOT NULL
     );
     INSERT INTO state (id, generation) VALUES (1, 0);
     CREATE TABLE keys (
        key_id BIGINT PRIMARY KEY,
        check_value TEXT NOT NULL,
        seals BIGINT NOT NULL DEFAULT 0
     );
     CREATE TABLE connections (
        conn_id TEXT COLLATE "C" PRIMARY KEY,
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
        version BIGINT NOT NULL,
        CHECK ((password IS NULL) = (password_key IS NULL)),
        CHECK ((extra IS NULL) = (extra_key IS NULL))
     );
     CREATE INDEX connections_type ON connections (conn_type, conn_id);
     CREATE INDEX connections_password_key ON connections (password_key);
     CREATE INDEX connections_extra_key ON connections (extra_key);
     CREATE TABLE pipelines (
        pipeline_id TEXT COLLATE "C" PRIMARY KEY,
        name TEXT NOT NULL,
        definition TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
     );
     CREATE TABLE pipeline_refs (
        pipeline_id TEXT COLLATE "C" NOT NULL
            REFERENCES pipelines (pipeline_id) ON DELETE CASCADE,
        node_id TEXT COLLATE "C" NOT NULL,
        conn_id TEXT COLLATE "C" NOT NULL,
        PRIMARY KEY (pipeline_id, node_id)
     );
     CREATE INDEX pipeline_refs_conn ON pipeline_refs (conn_id);