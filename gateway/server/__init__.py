"""The server process: settings (the only environment reader) and the composition root."""
