"""The source: reads change events from Kafka, decodes them, sends bad ones to the DLQ."""
