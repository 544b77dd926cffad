"""The application layer: opening a run (session) and the small public API the frontends use (api)."""
