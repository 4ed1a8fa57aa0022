"""The spool on disk: chunks waiting for their acknowledgement and dead letters
(``chunks.Spool``), the SQLite file (``database``), checkpoints and backlog marks
(``file_state``), the room left (``room``, ``disk_reserve``)."""
