CREATE TABLE charges (
    id TEXT PRIMARY KEY, amount INTEGER NOT NULL, scopes TEXT NOT NULL,
    at REAL NOT NULL) WITHOUT ROWID;
CREATE INDEX charges_at ON charges (at);
