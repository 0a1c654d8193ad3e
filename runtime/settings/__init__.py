"""Settings: the typed, validated objects that a user's settings are resolved into once, at the
edge (command line, Python API, HTTP request), and passed inward."""
