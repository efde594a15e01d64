"""Who may do what: accounts, API tokens, roles, tenancy, password hashing, throttles."""
