"""Tools to see inside a model and a run: the explain page, the training report, embedding projections."""

from bertkit.inspect.explain import Explanation, MaskGuess, explain, format_table, write_page
from bertkit.inspect.projection import pca_2d, plot_embeddings
from bertkit.inspect.report import build_report

__all__ = [
    "Explanation",
    "MaskGuess",
    "build_report",
    "explain",
    "format_table",
    "pca_2d",
    "plot_embeddings",
    "write_page",
]
