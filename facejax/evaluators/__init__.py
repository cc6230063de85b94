"""Evaluation reports and plots (the architecture issue moves the others
here: verification, age, FID, probe)."""
