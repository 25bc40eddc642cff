"""Ensembles composed over model endpoints (the fraud + credit decision pipeline comes in a later issue)."""
