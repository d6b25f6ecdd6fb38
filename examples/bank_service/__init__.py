"""A FastAPI bank-account service on PostgreSQL with a read model and an outbox to a bus."""
