"""Evaluation: metrics, reports and plots; tasks call in, never the reverse.

verification (ROC, AUC, TAR@FAR, best threshold: defined once), fid,
probe (a fresh probe discriminator), reports (Markdown/JSON reports and
matplotlib plots), image_grid and face_figure (pictures), and one module
per model's evaluation report or pictures (age, age_transformer,
caricature, kinship, stargan, swinface).
"""
