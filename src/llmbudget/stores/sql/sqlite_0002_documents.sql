CREATE TABLE docs (
    kind TEXT NOT NULL, key TEXT NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY (kind, key)) WITHOUT ROWID;
CREATE TABLE logs (
    id INTEGER PRIMARY KEY, kind TEXT NOT NULL, at REAL NOT NULL, data TEXT NOT NULL);
CREATE INDEX logs_kind_at ON logs (kind, at);
