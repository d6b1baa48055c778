"""The load connbench applies and what it samples meanwhile: the locustfile, open-model arrivals, the
connection panel, PostgreSQL and process sampling, the targets' /stats."""

from pathlib import Path

LOCUSTFILE = Path(__file__).with_name("locustfile.py")  # Locust loads it by path
