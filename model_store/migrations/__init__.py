"""The catalog's schema migrations (model_store.postgres.migrate, component "catalog"); never edit a released one."""
