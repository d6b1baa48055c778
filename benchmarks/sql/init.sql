-- The World table of the TechEmpower "db" test and the shutdown log the exit hooks write to.
-- Shared by the embedded stack (benchmarks/stack/postgres.py) and the postgres container (docker-entrypoint-initdb.d).
CREATE TABLE IF NOT EXISTS world (
    id integer PRIMARY KEY,
    randomnumber integer NOT NULL
);
INSERT INTO world (id, randomnumber)
SELECT i, 1 + floor(random() * 10000)::integer FROM generate_series(1, 10000) AS i
ON CONFLICT (id) DO NOTHING;

CREATE TABLE IF NOT EXISTS shutdown_log (
    id bigserial PRIMARY KEY,
    target text NOT NULL,
    pid integer NOT NULL,
    logged_at timestamptz NOT NULL DEFAULT now()
);
ANALYZE world;
