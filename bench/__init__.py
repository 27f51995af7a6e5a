"""The benchmark harness of sync-service (issue 6): `python -m bench.run [--quick]`."""
