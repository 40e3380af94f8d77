"""The Annovox inference engine: promptable 3D segmentation (the nnInteractive method).

A plain Python library that never imports Django (see DESIGN.md). Its implementation is the subject of the
engine issue; this package exists so the layout is in place.
"""
