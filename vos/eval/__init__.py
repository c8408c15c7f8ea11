"""Evaluation: DAVIS / YouTube-VOS metrics, folder scoring and reports."""

from vos.eval.metrics import boundary_f, jaccard, seg2bmap, sequence_scores, summarize, youtube_g
from vos.eval.report import set_runtime, write_reports
from vos.eval.score import score_folders

__all__ = [
    "boundary_f",
    "jaccard",
    "score_folders",
    "seg2bmap",
    "sequence_scores",
    "set_runtime",
    "summarize",
    "write_reports",
    "youtube_g",
]
