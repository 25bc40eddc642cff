"""Models made of models: config-driven ensembles and Python pipelines (``docs/architecture.md``).

``spec`` and ``graph`` say what a composite is and check it; ``ensemble`` and ``loan_decision``
run one; ``members``, ``endpoint`` and ``app`` put it on Ray Serve.
"""
