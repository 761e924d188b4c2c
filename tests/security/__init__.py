"""Security tests: where credentials come from, that they are never printed, and Kafka SASL (issue 7)."""
