"""The build stage: source -> runtime (buildpack) -> build plan -> artifact (OCI image or slug)."""
