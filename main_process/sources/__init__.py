"""What the main process reads: followed files and their rotations (``source_set``
and its parts), backlog uploads, the Star Citizen preset, text streams (``text_feed``),
all behind ``line_source.LineSource``; chunking lines (``line_chunker``)."""
