"""The napari plugin: segment, inspect and correct cells in napari with the models and
the output files of the command line.

Nothing here imports napari or Qt at import time: :mod:`~bloomseg.viewer.layers`,
:mod:`~bloomseg.viewer.reader` and :mod:`~bloomseg.viewer.sample` hand napari plain layer
data, :mod:`~bloomseg.viewer.widget` (the dock widget) and
:mod:`~bloomseg.viewer.launch` (``bloomseg view``) import it when they are used.
``napari.yaml`` is the plugin's npe2 manifest (the ``napari.manifest`` entry point).
"""
