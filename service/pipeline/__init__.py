"""The consume pipeline: fetch -> route -> ingest -> DLQ -> store -> commit, and its controls."""
