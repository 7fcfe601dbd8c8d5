"""Alembic migrations for the schema in models/; bot.migrate runs them, env.py wires them up."""
