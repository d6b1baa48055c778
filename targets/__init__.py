"""The targets connbench measures: one folder per family with its family.toml (families.py reads them),
the one registry of their targets (registry.py), the contract every family serves (contract.py) and the
user's own services (yours.py)."""
