"""One log-monitor window per process: a pywebview page that views and asks, never owns.

The package is run as ``python -m renderer`` (see ``renderer.cli``). The main process owns
the connection, the tokens and the spool; a renderer only shows what the main process
publishes (``renderer.feed``), sends the user's actions back as commands
(``renderer.commands``), and closes itself when the main process is gone.
"""
