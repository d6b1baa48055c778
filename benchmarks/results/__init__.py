"""Results and report: the results schema, run folders, the data the report reads, its answers, the notebook."""
