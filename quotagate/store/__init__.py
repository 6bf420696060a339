"""Storage: SQL (SQLite or PostgreSQL) and counters (in-process or Redis). The only package that imports them."""
