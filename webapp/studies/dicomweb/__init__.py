"""DICOMweb (PS3.18) at ``/dicomweb/``: QIDO-RS search, WADO-RS retrieve, STOW-RS store.

The views in :mod:`.views` are thin async wrappers; the work is done by plain functions in :mod:`.qido`,
:mod:`.wado`, :mod:`.pixels` and :mod:`.stow`. See ``docs/dicomweb.md``.
"""
