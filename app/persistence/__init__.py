"""Where the row is written: the schema, the per-message ledger and the admin repository."""
