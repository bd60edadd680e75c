"""Annotations, frame sources, windows, augmentation and datasets."""
