CREATE TABLE meta (
        name TEXT COLLATE "C" PRIMARY KEY,
        value TEXT NOT NULL
     );