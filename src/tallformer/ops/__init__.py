"""Tensor operations with no model state (segments: IoU, coding, NMS)."""
