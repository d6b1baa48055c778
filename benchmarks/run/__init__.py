"""Runs that combine the stack and the load: scenarios, the matrix and its cells, faults, the baseline,
verification, `connbench up`."""
