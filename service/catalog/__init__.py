"""The catalog service: every read and write of sources, models, destinations and syncs."""

from service.catalog.errors import CatalogError, Conflicting, Invalid, NotFound
from service.catalog.service import Catalog, DestinationCheck

__all__ = ["Catalog", "CatalogError", "Conflicting", "DestinationCheck", "Invalid", "NotFound"]
