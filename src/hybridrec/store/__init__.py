"""The feature store in Redis and the connection to Redis (embedded, URL or cluster)."""
