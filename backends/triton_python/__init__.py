"""Triton's Python backend: ``<version>/model.py`` defining ``TritonPythonModel``, served unchanged.

``utils`` is the module such models import as ``triton_python_backend_utils``; ``backend`` loads a
model file and runs its ``execute`` on the requests the dynamic batcher gathered.
"""
