"""Real servers for the tests and the benchmark: git over smart HTTP, S3, Kafka, a breakable proxy."""
