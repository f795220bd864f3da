"""Facial expression recognition from visible and infrared images (Lightning + Hydra)."""
