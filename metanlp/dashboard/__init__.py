"""Page-side helpers for the Streamlit dashboard.

Pages (``app.py`` and ``pages/``) only lay out widgets; what they draw comes from here:
``charts`` (Plotly figures), ``forms`` (validation with messages per field), ``live`` and
``episode_view`` (in-process adaptation on a frozen encoder), ``attention`` (before/after maps),
``run_view`` (progress, ETA, downloads) and ``state`` (session keys and cached resources —
the only module here that imports Streamlit).
"""
