"""The sqlalchemy family: SQLAlchemy's async engine over asyncpg (engine.py) served by app.py; family.toml
tells targets/families.py how to serve it."""
