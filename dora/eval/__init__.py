"""Evaluations: preference accuracy and win rate on a held-out split (``preference``), and the
distributional-alignment benchmark (``distalign``)."""
