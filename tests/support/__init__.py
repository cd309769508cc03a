"""Real servers for tests and benchmark: git over smart HTTP, S3, Kafka, a breakable proxy."""
