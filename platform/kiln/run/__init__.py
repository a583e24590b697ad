"""The run stage: releases as Ray Serve applications whose replicas supervise dynos."""
