"""The HTTP surface: health, readiness and metrics now; the REST API beside them."""
