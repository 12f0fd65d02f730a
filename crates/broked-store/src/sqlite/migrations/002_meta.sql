CREATE TABLE meta (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL
     ) WITHOUT ROWID;