"""The django family: a minimal Django project (settings.py, views.py) under gunicorn's gthread worker
(gunicorn_conf.py); family.toml tells targets/families.py how to serve it."""
