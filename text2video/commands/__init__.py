"""Sub-commands of the ``text2video`` CLI, one module each (see ``text2video.cli``)."""
