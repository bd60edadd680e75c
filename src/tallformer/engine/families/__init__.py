"""The detector families' engine sides, one module each (`tallformer.engine.family.Family`):
`anchor` (TALLFormer's THUMOS14 detector: sliding windows, weighted-NMS merge) and `afsd`
(the ActivityNet detector: one pass, video-level label fusion, two protocols). The factory
table `tallformer.engine.factory.FAMILIES` names them; nothing else in the engine or the
commands knows a family by name.
"""
