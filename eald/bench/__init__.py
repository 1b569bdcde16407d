"""Benchmarks, run with ``python -m eald.bench [name ...]`` (``make bench`` runs them all).

- ``sampling``: 32 frame-exact frames out of a 7-minute 720p H.264 video with
  :func:`eald.data.media.read_frames`, against a full sequential decode and decord.

Inputs are generated once and cached under ``.cache/bench/``; results are printed and written
as JSON next to them. Benchmarks report, they never fail the build.
"""
