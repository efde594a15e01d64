"""The server's storage: tables, the database and its migrations, append queue, blob store."""
