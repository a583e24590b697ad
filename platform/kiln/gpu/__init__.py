"""GPUs: what each node has (NVML), and whether a release's replicas can ever be placed."""
