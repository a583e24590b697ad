"""The release stage: what runs once per release before traffic moves (weights into the cache)."""
