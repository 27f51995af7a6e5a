"""Destination types. Adding one: a module with a config model and a DestinationWriter, and an
entry in `registry.DESTINATION_TYPES`."""
