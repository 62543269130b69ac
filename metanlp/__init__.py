"""metanlp: transfer learning and meta-learning for few-shot NLP.

Layers, bottom to top: ``data`` (datasets, episodes) → ``encoders`` (texts → embeddings,
attention) → ``methods`` (one ``Method`` interface) → ``engine`` (runs, metrics, store)
→ the Streamlit dashboard (``app.py`` + ``pages/``).
"""

__version__ = "0.1.0"
