"""Git push deploys: each app's bare repository, served over smart HTTP; a push to main builds
and releases inside the pre-receive hook, so the log streams back as ``remote:`` lines."""
