"""A TorchServe module handler that answers with the archive's version (``modelVersion``), for swaps."""


def handle(data, context):
    if data is None:  # TorchServe calls it once at load with no data
        return None
    version = context.manifest["model"]["modelVersion"]
    return [f"version {version}" for _ in data]
