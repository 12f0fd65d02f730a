CREATE TABLE tokens (
        name TEXT COLLATE "C" PRIMARY KEY,
        hash TEXT NOT NULL UNIQUE,
        scopes TEXT NOT NULL,
        conns TEXT,
        created_at TEXT NOT NULL,
        expires_at TEXT,
        last_used_at TEXT
     );