"""TorchServe's handlers, served unchanged: an unpacked ``.mar`` (``MAR-INF/MANIFEST.json`` and its files)
is a version folder; ``backend`` runs its handler with TorchServe's own ``ts`` package on the requests
the dynamic batcher gathered. ``wire`` is the request form every protocol hands it (no torch)."""
