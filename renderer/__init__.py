"""The renderer host: one process holding every log-monitor window of a data dir.

The package is run as ``python -m renderer`` (see ``renderer.cli``), started by the main
process when the first window is wanted. Its windows (``renderer.window``) share one Qt
WebEngine browser and one profile (``renderer.qt_shell``), each page in a render process of
its own. The main process owns the connection, the tokens and the spool; a window only
shows what the main process publishes (``renderer.feed``), sends the user's actions back
as commands (``renderer.commands``), and the host closes every window when the main
process is gone.
"""
