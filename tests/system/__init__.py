"""System tests: the whole application with real desktops and tools (Qt windows,
Xvfb, a tray, notifications, Debian's logrotate, PostgreSQL, Redis, HAProxy, GNOME
Keyring), processes killed, the fault campaign, and the lint."""
