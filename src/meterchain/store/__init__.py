"""Persistence: SQLAlchemy 2 models and small repositories; SQLite (WAL) by default."""
