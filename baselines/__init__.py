"""Supervised linear-probe baselines (SlowFast, TSM, TimeSformer, Video-Swin, BEATs).

Arrives with the linear-probe task; the package exists so the layout and packaging are fixed.
"""
