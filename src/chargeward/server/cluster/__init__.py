"""Several server nodes on one database: leader election and the shared report writer."""
