"""The training-job queue's schema: versioned SQL files, component "jobs" (model_store.postgres.migrate)."""
