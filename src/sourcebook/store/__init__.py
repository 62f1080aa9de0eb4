"""Storage: the records of the knowledge base, its derived search indexes, and teams
(users, keys, audit)."""
