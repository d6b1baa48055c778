"""The python family: its service (app.py), strategies (strategies.py), drivers and timing; family.toml
tells targets/families.py how to serve it."""
