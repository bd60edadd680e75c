"""Annotations (and their importers), frame sources, windows, augmentation and datasets."""
