CREATE TABLE audit (
        seq BIGINT PRIMARY KEY,
        at TEXT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        conn_id TEXT COLLATE "C",
        fields TEXT NOT NULL,
        outcome TEXT NOT NULL,
        request_id TEXT,
        value_hashes TEXT NOT NULL,
        detail TEXT NOT NULL,
        mac TEXT NOT NULL
     );
CREATE INDEX audit_by_conn ON audit (conn_id, seq);
