"""Base types every stage shares: the domain, row records, interfaces, errors and metrics."""
