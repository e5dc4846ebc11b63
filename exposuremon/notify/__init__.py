"""Chat notifications: pure rendering per chat format, and an outbox worker that delivers."""
