"""Running the control plane: the foreground server and its background process (pid file)."""
