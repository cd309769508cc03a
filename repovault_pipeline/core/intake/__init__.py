"""Requests coming in: URLs to run tags, Kafka messages, the injector, submit, the reconciler."""
