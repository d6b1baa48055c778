# workerd config for the worker family with connbench's --tls (family.toml's ca_command):
#   workerd serve -I CA_DIR worker-tls.capnp --socket-addr http=HOST:PORT
# workerd verifies the server's certificate on startTls and trusts only what its network lists, so the
# network trusts connbench's throw-away certificate, found as /server.crt on the import path CA_DIR.
# The Worker itself is worker.capnp's.
using Workerd = import "/workerd/workerd.capnp";
using Plain = import "worker.capnp";

const config :Workerd.Config = (
  services = [
    (name = "main", worker = Plain.worker),
    (name = "internet", network = (
      allow = ["public", "private", "local"],
      tlsOptions = (trustedCertificates = [embed "/server.crt"]),
    )),
  ],
  sockets = [(name = "http", address = "127.0.0.1:8000", http = (), service = "main")],
);
