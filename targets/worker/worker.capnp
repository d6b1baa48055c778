# workerd config for the worker family (worker-tls.capnp with --tls). `connbench serve` runs
#   workerd serve worker.capnp --socket-addr http=HOST:PORT
# with CONNBENCH_* in the environment; the Worker reads them through fromEnvironment bindings.
using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [
    (name = "main", worker = .worker),
    # The Worker reaches PostgreSQL on 127.0.0.1 only through a network that allows local addresses.
    (name = "internet", network = (allow = ["public", "private", "local"])),
  ],
  sockets = [(name = "http", address = "127.0.0.1:8000", http = (), service = "main")],
);

const worker :Workerd.Worker = (
  modules = [
    (name = "worker.mjs", esModule = embed "build/worker.mjs"),
    (name = "query_compiler.wasm", wasm = embed "build/query_compiler.wasm"),
  ],
  compatibilityDate = "2026-10-01",  # nodejs_compat (pg needs it) is on by default since 2026-08-04
  bindings = [
    (name = "CONNBENCH_TARGET", fromEnvironment = "CONNBENCH_TARGET"),
    (name = "CONNBENCH_DSN", fromEnvironment = "CONNBENCH_DSN"),
    (name = "CONNBENCH_PID", fromEnvironment = "CONNBENCH_PID"),
    (name = "CONNBENCH_STARTED_AT", fromEnvironment = "CONNBENCH_STARTED_AT"),
    (name = "CONNBENCH_POOL_MIN", fromEnvironment = "CONNBENCH_POOL_MIN"),
    (name = "CONNBENCH_POOL_MAX", fromEnvironment = "CONNBENCH_POOL_MAX"),
    (name = "CONNBENCH_POOL_TIMEOUT", fromEnvironment = "CONNBENCH_POOL_TIMEOUT"),
    (name = "CONNBENCH_CONNECT_TIMEOUT", fromEnvironment = "CONNBENCH_CONNECT_TIMEOUT"),
    (name = "CONNBENCH_REQUEST_TIMEOUT", fromEnvironment = "CONNBENCH_REQUEST_TIMEOUT"),
    (name = "CONNBENCH_SHUTDOWN_TIMEOUT", fromEnvironment = "CONNBENCH_SHUTDOWN_TIMEOUT"),
  ],
);
