"""The store: catalog, pending and synced rows, and run records, behind one interface."""
