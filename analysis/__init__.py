"""Analysis of a sweep's results: the tidy trials table, the paper's tables and figures, the
comparison with the published numbers, and a one-page report (``python -m analysis``).

Imports neither torch nor transformers; Ray only inside :func:`analysis.results.read_ray_experiment`.
"""

from analysis.results import ResultsError, load_results

__all__ = ["ResultsError", "load_results"]
