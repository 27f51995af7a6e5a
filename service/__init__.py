"""sync-service: keeps destinations in step with models whose row changes arrive on Kafka."""

__version__ = "0.1.0"
