CREATE TABLE spend (
    scope TEXT NOT NULL, window INTEGER NOT NULL, spent INTEGER NOT NULL,
    PRIMARY KEY (scope, window)) WITHOUT ROWID;
CREATE TABLE spend_model (
    scope TEXT NOT NULL, window INTEGER NOT NULL, model TEXT NOT NULL,
    spent INTEGER NOT NULL, PRIMARY KEY (scope, window, model)) WITHOUT ROWID;
CREATE TABLE holds (
    id TEXT PRIMARY KEY, amount INTEGER NOT NULL, expires_at REAL NOT NULL,
    state TEXT NOT NULL, actual INTEGER NOT NULL DEFAULT 0, lines TEXT NOT NULL);
CREATE INDEX holds_expires ON holds (expires_at);
-- Only holds still counting live here, so the sum of active holds stays a short scan.
CREATE TABLE active_holds (
    scope TEXT NOT NULL, window INTEGER NOT NULL, hold_id TEXT NOT NULL,
    amount INTEGER NOT NULL, expires_at REAL NOT NULL,
    PRIMARY KEY (scope, window, hold_id)) WITHOUT ROWID;
CREATE TABLE budgets (
    scope TEXT PRIMARY KEY, limit_units INTEGER, duration TEXT,
    timezone TEXT NOT NULL, rolling INTEGER NOT NULL,
    created_at REAL NOT NULL, updated_at REAL NOT NULL) WITHOUT ROWID;
