-- budgets in other units (requests, tokens, concurrent). Holds need no change: a
-- line (JSON) with an amount of its own is [scope, window, amount], and [scope, window]
-- holds the hold's amount.
ALTER TABLE budgets ADD COLUMN unit TEXT NOT NULL DEFAULT 'usd';
